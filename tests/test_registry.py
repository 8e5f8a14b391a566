"""mmdat's models resolve from every toolbox's registry, unscoped and scoped."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import mmdat
from mmdat.models.backbones import DAT

TINY = dict(embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
            groups=[1, 1, 2, 2])


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
@pytest.mark.parametrize('type_name', ['DAT', 'mmdat.DAT'])
def test_build_from_toolbox_scope(scope, type_name):
    registry = {
        'mmpretrain': 'mmpretrain.registry',
        'mmdet': 'mmdet.registry',
        'mmseg': 'mmseg.registry',
    }[scope]
    MODELS = __import__(registry, fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(dict(type=type_name, arch=TINY))
    assert isinstance(model, DAT)


def test_custom_imports_in_a_toolbox_config(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)\n"
        "default_scope = 'mmdet'\n"
        f"backbone = dict(type='DAT', arch={TINY!r})\n")
    cfg = Config.fromfile(str(cfg_file))  # runs custom_imports
    init_default_scope(cfg.default_scope)
    from mmdet.registry import MODELS
    assert isinstance(MODELS.build(cfg.backbone), DAT)


def test_mmdat_scope_registry():
    assert mmdat.MODELS.scope == 'mmdat'
    assert mmdat.MODELS.get('DAT') is DAT
