"""Every playbook phrase rendered with many slot values: grammatical agreement in Russian (pymorphy3),
vocabulary-only slots in English, and never the customer's own words."""

from __future__ import annotations

import re

import pytest

from callsense.config import CONFIG_DIR
from callsense.stages.phrases import SLOT, CallContext, load_playbook, morph, render

RU_NAMES = [("Иван", "Петрович"), ("Мария", "Сергеевна"), ("Ольга", "Ивановна"), ("Алексей", "Николаевич")]
EN_NAMES = ["John", "Mary", "Aisha", "Wei"]


def _slot_values(template: str, rendered: str) -> list[str]:
    """What each slot of `template` became in `rendered`."""
    parts = SLOT.split(template)
    pattern = "".join(re.escape(p) if i % 3 == 0 else ("(.+?)" if i % 3 == 1 else "") for i, p in enumerate(parts))
    m = re.fullmatch(pattern, rendered)
    assert m, (template, rendered)
    return list(m.groups())


@pytest.mark.parametrize("language", ["ru", "en"])
def test_every_phrase_agrees_with_every_slot_value(language):
    playbook = load_playbook(CONFIG_DIR / "playbooks", language)
    names = RU_NAMES if language == "ru" else [(n, None) for n in EN_NAMES]
    templates = [t for phrases in playbook.situations.values() for t in phrases]
    assert any(SLOT.search(t) for t in templates)
    rendered = 0
    for topic in sorted(set(playbook.topics.values())):
        for first, patronymic in names:
            ctx = CallContext(first_name=first, patronymic=patronymic, topic=topic)
            for template in templates:
                text = render(template, ctx, playbook)
                assert text is not None and "{" not in text, template
                for slot, value in zip(SLOT.finditer(template), _slot_values(template, text), strict=True):
                    if slot.group(1) == "address":
                        assert value == (f"{first} {patronymic}" if patronymic else first)
                    elif language == "ru":
                        parses = morph().parse(value)
                        assert any(p.normal_form == topic.replace("ё", "е") or p.normal_form == topic for p in parses), (
                            value,
                            topic,
                        )
                        assert any(p.tag.case == slot.group(2) and "sing" in p.tag for p in parses), (value, slot.group(2))
                    else:
                        assert value == topic
                rendered += 1
    assert rendered >= len(templates) * 4


def test_unfillable_slots_fall_back_to_generic_phrases():
    playbook = load_playbook(CONFIG_DIR / "playbooks", "ru")
    ctx = CallContext()
    ctx.learn("Меня зовут Игорь Петров, у меня не проходит оплата за что-то странное", playbook)
    assert ctx.first_name == "Игорь" and ctx.patronymic is None and ctx.topic is None
    for phrases in playbook.situations.values():
        for template in phrases:
            text = render(template, ctx, playbook)
            assert (text is None) == bool(SLOT.search(template)), template
            assert text is None or ("Петров" not in text and "странное" not in text)
