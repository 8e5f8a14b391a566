"""The demo (`make demo`, tools/demo.py), shortened: the same path end to end (generate data,
test the untrained model, train, test, draw the deformed points) with a smaller dataset and
fewer epochs; the trained model must beat the untrained one on the held-out split."""
import importlib.util
import json
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _demo():
    spec = importlib.util.spec_from_file_location('mmdat_demo', osp.join(REPO, 'tools/demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('task', ['det', 'cls'])
def test_quick_demo_learns(task, tmp_path):
    """det is `make demo`'s default task; cls is another."""
    demo = _demo()
    args = ['--quick', '--work-dir', str(tmp_path)]
    result = demo.main(args if task == 'det' else args + ['--task', task])
    print(f"\n[demo --quick --task {task}] held-out {result['metric']} {result['trained']:.2f} "
          f"after {result['epochs']} epochs, untrained {result['untrained']:.2f}, chance "
          f"{result['chance']}, {result['minutes']} min")
    if task == 'det':  # COCO bbox mAP (%): the untrained model finds nothing
        assert result['untrained'] < 1
        assert result['trained'] >= result['untrained'] + 3
    else:  # 150 held-out images: 8 points are 12 images, far outside an unchanged model's
        assert result['trained'] >= result['untrained'] + 8
        assert result['trained'] >= 100 / 3 + 8
    assert osp.getsize(result['picture']) > 10_000  # a real PNG, not an empty canvas
    blocks = result['points_on_shapes']
    assert set(blocks) == {'2.1', '3.1'}  # the deformable blocks of DAT-nano
    for block in blocks.values():
        for where in block.values():
            assert 0 < where['on_image'] <= 1 and 0 <= where['on_shapes'] <= 1
            assert where['distance'] >= 0
    with open(osp.join(str(tmp_path), task, 'result.json')) as f:
        assert json.load(f) == result
