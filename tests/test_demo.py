"""The demo (`make demo`, tools/demo.py), shortened: the same path end to end (generate data,
test the untrained model, train, test, draw the deformed points) with a smaller dataset and
fewer epochs; the trained model must beat the untrained one on the held-out split."""
import importlib.util
import json
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _demo():
    spec = importlib.util.spec_from_file_location('mmdat_demo', osp.join(REPO, 'tools/demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_demo_learns(tmp_path):
    result = _demo().main(['--quick', '--work-dir', str(tmp_path)])
    print(f"\n[demo --quick] held-out top-1 {result['trained']:.2f} after {result['epochs']} "
          f"epochs, untrained {result['untrained']:.2f}, chance 33.33, "
          f"{result['minutes']} min")
    # 150 held-out images: 8 points are 12 images, far outside what an unchanged model gives
    assert result['trained'] >= result['untrained'] + 8
    assert result['trained'] >= 100 / 3 + 8
    assert osp.getsize(result['picture']) > 10_000  # a real PNG, not an empty canvas
    with open(osp.join(str(tmp_path), 'cls', 'result.json')) as f:
        assert json.load(f) == result
