"""``tools/slurm_train.sh`` / ``tools/slurm_test.sh`` (srun, ``--launcher slurm``) on a host
without Slurm and without GPUs.

A stand-in ``srun`` on PATH records its options, command and environment, then runs the
command here as the single task of a one-node job, with the variables srun sets
(``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_NODELIST``, ...); a stand-in ``scontrol`` answers
``scontrol show hostname``, which mmengine asks for the master address. The run trains on
generated data through the toolbox's own train script (gloo on CPU, mmdat.compat), and the
checkpoint is tested through slurm_test.sh.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

from _dist_utils import REPO, check_group, check_training, free_port, launch, launch_env, \
    probe_setup

SRUN = '''#!{python}
"""Stand-in for Slurm's srun (tests/test_slurm.py)."""
import json
import os
import sys

args = sys.argv[1:]
options, i = [], 0
while i < len(args) and args[i].startswith('-'):
    options.append(args[i])
    if args[i] in ('-p', '--partition', '-J', '-n', '-N', '-c'):  # the value follows
        i += 1
        options.append(args[i])
    i += 1
command = args[i:]
with open(os.environ['SRUN_RECORD'], 'a') as f:
    f.write(json.dumps(dict(options=options, command=command, env=dict(os.environ))) + '\\n')
named = dict(o[2:].split('=', 1) for o in options if o.startswith('--') and '=' in o)
# the environment of task 0 of a one-task, one-node job
os.environ.update(
    SLURM_JOB_ID='4242', SLURM_JOB_NAME=named.get('job-name', ''),
    SLURM_JOB_PARTITION=options[options.index('-p') + 1], SLURM_NNODES='1', SLURM_NODEID='0',
    SLURM_NODELIST='localhost', SLURM_NTASKS='1', SLURM_NTASKS_PER_NODE='1',
    SLURM_PROCID='0', SLURM_LOCALID='0', SLURM_CPUS_PER_TASK=named.get('cpus-per-task', '1'))
os.execvp(command[0], command)
'''

SCONTROL = '''#!/bin/sh
# Stand-in for Slurm's scontrol (tests/test_slurm.py): `show hostname LIST`, one host a line.
echo "$@" >> "$SCONTROL_RECORD"
if [ "$1" = show ] && [ "$2" = hostname ]; then
  echo "$3" | tr ',' '\\n'
fi
'''


def slurm_env(tmp_path):
    """PATH with the stand-ins first; one task on one "GPU"; the toolbox variables set."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(parents=True)
    for name, text in (('srun', SRUN.format(python=sys.executable)), ('scontrol', SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = launch_env(str(tmp_path), PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                     GPUS='1', GPUS_PER_NODE='1', CPUS_PER_TASK='2',
                     SRUN_ARGS='--time=30 --comment=mmdat-test',
                     MASTER_PORT=str(free_port()),
                     SRUN_RECORD=str(tmp_path / 'srun.jsonl'),
                     SCONTROL_RECORD=str(tmp_path / 'scontrol.log'))
    env.pop('MASTER_ADDR', None)  # as in a fresh job: mmengine asks scontrol for it
    return env


def srun_calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / 'srun.jsonl').read_text().splitlines()]


def srun_options(partition, job_name):
    return ['-p', partition, f'--job-name={job_name}', '--gres=gpu:1', '--ntasks=1',
            '--ntasks-per-node=1', '--cpus-per-task=2', '--kill-on-bad-exit=1',
            '--time=30', '--comment=mmdat-test']


def test_slurm_train_and_test(tmp_path):
    config, root = probe_setup(tmp_path)
    env = slurm_env(tmp_path)
    work = tmp_path / 'slurm work'  # a path with a space reaches train.py as one argument
    tools = osp.join(REPO, 'tools')

    launch('slurm_train.sh', 'cpu-part', 'dat-train', str(config), str(work),
           '--cfg-options', 'randomness.seed=0', cwd=str(tmp_path), env=env)

    [call] = srun_calls(tmp_path)
    assert call['options'] == srun_options('cpu-part', 'dat-train')
    assert call['command'] == [sys.executable, '-u', osp.join(tools, 'train.py'), str(config),
                               f'--work-dir={work}', '--launcher=slurm',
                               '--cfg-options', 'randomness.seed=0']
    assert osp.realpath(call['env']['PYTHONPATH'].split(os.pathsep)[0]) == osp.realpath(REPO)
    # the master address came from the job's node list, as on a cluster
    assert (tmp_path / 'scontrol.log').read_text().split('\n')[0] == 'show hostname localhost'
    [task] = check_group(work, world_size=1)
    assert task['LOCAL_RANK'] == '0'
    ckpt = check_training(work, root, world_size=1)

    out = launch('slurm_test.sh', 'cpu-part', 'dat-test', str(config), str(ckpt),
                 '--work-dir', str(work / 'test'), cwd=str(tmp_path), env=env)
    call = srun_calls(tmp_path)[1]
    assert call['options'] == srun_options('cpu-part', 'dat-test')
    assert call['command'] == [sys.executable, '-u', osp.join(tools, 'test.py'), str(config),
                               str(ckpt), '--launcher=slurm', '--work-dir', str(work / 'test')]
    acc = re.search(r'Epoch\(test\).*accuracy/top1: ([\d.]+)', out)
    assert acc, out[-3000:]
    assert 0 <= float(acc.group(1)) <= 100


def test_slurm_scripts_need_their_arguments(tmp_path):
    for script, last in (('slurm_train.sh', 'WORK_DIR'), ('slurm_test.sh', 'CHECKPOINT')):
        proc = subprocess.run(['bash', osp.join(REPO, 'tools', script), 'part', 'job', 'cfg.py'],
                              env=slurm_env(tmp_path / script), capture_output=True, text=True)
        assert proc.returncode == 2
        assert f'PARTITION JOB_NAME CONFIG {last}' in proc.stderr
        assert not (tmp_path / script / 'srun.jsonl').exists()  # srun was not called
