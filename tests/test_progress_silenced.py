"""``silenced_bars``: under --quiet / progress=False no tqdm bar prints, not even a third-party one."""

from __future__ import annotations

import io

from tqdm import tqdm

from attributor.progress import progress_bar, silenced_bars


def _draw(file: io.StringIO) -> None:
    for _ in tqdm(range(3), desc="a third-party bar", file=file, mininterval=0):  # as traker and dattri make theirs
        pass


def test_a_third_party_bar_prints_nothing_inside_and_prints_again_after():
    inside, after, unchanged = io.StringIO(), io.StringIO(), io.StringIO()
    with silenced_bars():
        _draw(inside)
        with progress_bar(3, "ours", file=inside) as bar:
            bar.update(3)
    _draw(after)
    with silenced_bars(False):
        _draw(unchanged)
    assert inside.getvalue() == ""
    assert "a third-party bar" in after.getvalue() and "a third-party bar" in unchanged.getvalue()


def test_the_patch_is_undone_when_the_body_raises():
    original = tqdm.__init__
    try:
        with silenced_bars():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert tqdm.__init__ is original
