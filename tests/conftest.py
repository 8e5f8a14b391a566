import pytest
from mmengine.registry import DefaultScope

import mmdat  # noqa: F401  (registers mmdat's models and applies the compatibility fixes)


@pytest.fixture(autouse=True)
def _isolated_default_scope():
    """Each test starts without a default scope: a Runner or ``init_default_scope`` in one
    test (e.g. mmseg's) must not change which registry another test's ``MODELS.build``
    searches."""
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)
