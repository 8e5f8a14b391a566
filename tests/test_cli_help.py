"""``tools/train.py`` / ``tools/test.py`` help: without a config, the options the three
toolboxes' scripts share (exit 0); with one, the config's toolbox's own help (exit 0);
neither a config nor --help is a usage error (exit 2), as with the toolboxes' scripts."""
import os.path as osp
import subprocess
import sys

import pytest

from mmdat.utils import run_toolbox_tool
from mmdat.utils.toolbox import shared_options_parser

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: one config per toolbox, and the description its own scripts print
DEMO = {'mmpretrain': ('configs/demo/dat_nano_shapes_cls.py', 'Train a model',
                       'MMPreTrain test (and eval) a model'),
        'mmdet': ('configs/demo/dat_nano_shapes_det.py', 'Train a detector',
                  'MMDet test (and eval) a model'),
        'mmseg': ('configs/demo/dat_nano_shapes_seg.py', 'Train a segmentor',
                  'MMSeg test (and eval) a model')}


def option_strings(parser):
    return [s for action in parser._actions for s in action.option_strings
            if s not in ('-h', '--help')]


def run_cli(tool, *args):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', f'{tool}.py'), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('tool,flag', [('train', '--help'), ('test', '-h')])
def test_help_without_config(tool, flag):
    proc = run_cli(tool, flag)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith(f'usage: {tool}.py ')
    usage = ' '.join(out.split('\n\n')[0].split())
    assert usage.endswith('CONFIG CHECKPOINT' if tool == 'test' else '] CONFIG')
    for option in option_strings(shared_options_parser(tool)):
        assert option in out
    assert f'`{tool}.py CONFIG --help`' in ' '.join(out.split())  # where the rest is
    # `mim train` runs `train.py -h` and adds `--gpus N` / `--device cpu` when it reads
    # "--gpus" there, which none of the toolboxes' scripts accept
    assert '--gpus' not in out


def test_help_with_config_is_the_toolboxs_own():
    config, _, test_description = DEMO['mmseg']
    proc = run_cli('test', config, '--help')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('usage: test.py ') and test_description in proc.stdout


@pytest.mark.parametrize('scope', sorted(DEMO))
def test_shared_options_are_every_toolboxs(scope, monkeypatch, capsys):
    """Each option of the summary is one of that toolbox's train/test options (in-process:
    the toolbox's own script prints its help)."""
    monkeypatch.setattr(sys, 'argv', list(sys.argv))  # run_toolbox_tool sets it
    config, train_description, test_description = DEMO[scope]
    for tool, description in (('train', train_description), ('test', test_description)):
        with pytest.raises(SystemExit) as exit_:
            run_toolbox_tool(tool, [osp.join(REPO, config), '--help'])
        assert exit_.value.code in (0, None)
        out = capsys.readouterr().out
        assert description in out, out
        for option in option_strings(shared_options_parser(tool)):
            assert option in out, f'{scope} tools/{tool}.py has no {option}'
        assert '{none,pytorch,slurm,mpi}' in out  # --launcher's choices


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_no_config_is_a_usage_error(tool, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_toolbox_tool(tool, ['--work-dir', 'somewhere'])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'usage: {tool}.py ') and 'CONFIG' in err
