"""tools/visualize_deformable.py, tools/analysis/get_flops.py and tools/benchmark.py."""
import importlib.util
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')

#: a small DAT: DAT-T's layout (stages 3-4 deformable, r = 1 and 1, s = 2) at 1/6 width
TINY_ARCH = dict(embed_dims=[16, 32, 64, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 4],
                 groups=[1, 1, 2, 2])

CLS_CONFIG = '''
_base_ = '{repo}/configs/_base_/models/dat_t_cls.py'
default_scope = 'mmpretrain'
model = dict(
    data_preprocessor=dict(num_classes=3, mean=[127.5] * 3, std=[64.] * 3, to_rgb=True),
    backbone=dict(arch=dict(_delete_=True, **{arch!r}), img_size=64, key_downsample=1, drop_path_rate=0.),
    head=dict(num_classes=3, in_channels=64),
    train_cfg=dict(_delete_=True))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 64)),
                 dict(type='PackInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
'''


def run_tool(script, *args, timeout=600):
    proc = subprocess.run([sys.executable, osp.join(TOOLS, script), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


# ------------------------------------------------------------------ visualize_deformable.py
@pytest.fixture(scope='module')
def cls_setup(tmp_path_factory):
    """A tiny classifier config, a checkpoint whose offset networks output zero (points on
    the reference grid), one with perturbed offset networks, and a 120x90 image."""
    from mmdat.utils.complexity import build_model, load_config
    tmp = tmp_path_factory.mktemp('vis')
    config = tmp / 'tiny_cls.py'
    config.write_text(textwrap.dedent(CLS_CONFIG.format(repo=REPO, arch=TINY_ARCH)))
    torch.manual_seed(0)
    model = build_model(load_config(str(config)))
    state = model.state_dict()
    last = [k for k in state if k.endswith('conv_offset.3.weight')]
    assert len(last) == 2  # one deformable block in each of stages 3 and 4
    zero, perturbed = dict(state), dict(state)
    for k in last:
        zero[k] = torch.zeros_like(state[k])
        perturbed[k] = torch.randn_like(state[k]) * 5
    paths = {}
    for name, sd in (('zero', zero), ('perturbed', perturbed)):
        paths[name] = tmp / f'{name}.pth'
        torch.save(dict(state_dict=sd, meta=dict()), paths[name])
    image = tmp / 'image.png'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    return dict(config=str(config), image=str(image), tmp=tmp, **paths)


def test_visualize_deformable_cli_writes_png(cls_setup):
    out = cls_setup['tmp'] / 'cli.png'
    stdout = run_tool('visualize_deformable.py', cls_setup['config'], cls_setup['perturbed'],
                      cls_setup['image'], '--out', out, '--query', 30, 40, '--topk', 5)
    assert stdout.strip().splitlines()[-1] == str(out)
    with Image.open(out) as png:
        assert png.format == 'PNG' and min(png.size) > 100


def test_visualize_deformable_points(cls_setup):
    """Zero offsets: the points are the reference grid, at the key cells' centres of the
    64x96 network input (the pipeline's resize), inside the image. Perturbed offset
    networks: the points move, by at most s/2 key cells (s = 2)."""
    from mmdat.utils.visualize import visualize
    tmp = cls_setup['tmp']
    _, still = visualize(cls_setup['config'], cls_setup['zero'], cls_setup['image'],
                         str(tmp / 'zero.png'), query=(30, 40), topk=5)
    _, moved = visualize(cls_setup['config'], cls_setup['perturbed'], cls_setup['image'],
                         str(tmp / 'perturbed.png'))
    assert [r.name for r in still] == [r.name for r in moved] == ['2.1', '3.1']
    for a, b in zip(still, moved):
        stride = 16 if a.name == '2.1' else 32
        assert a.stride == b.stride == stride
        G, Hk, Wk, _ = a.points.shape
        assert (G, Hk, Wk) == (2, 64 // stride, 96 // stride)
        centres = (np.stack(np.meshgrid(np.arange(Hk), np.arange(Wk), indexing='ij'), -1)
                   + 0.5) * stride
        np.testing.assert_allclose(a.points, np.broadcast_to(centres, a.points.shape),
                                   atol=1e-4)
        np.testing.assert_allclose(b.reference, a.reference, atol=1e-4)
        ys, xs = a.points[..., 0], a.points[..., 1]
        assert (ys > 0).all() and (ys < 64).all() and (xs > 0).all() and (xs < 96).all()
        shift = np.abs(b.points - a.points)
        assert shift.max() > 0.2 * stride  # the offsets moved the points
        assert shift.max() <= stride * (1 + 1e-4)  # s/2 = 1 key cell at most
        # the query's top keys: weights of a distribution, sorted, at drawn points
        weights = [t[0] for t in a.topk]
        assert len(weights) == 5 and weights == sorted(weights, reverse=True)
        assert 0 < sum(weights) <= 1 + 1e-6
        for _, g, k, y, x in a.topk:
            np.testing.assert_allclose((y, x), a.points[g].reshape(-1, 2)[k])
    assert (tmp / 'zero.png').stat().st_size > 0


def test_visualize_deformable_detection_config(tmp_path):
    """A detection config (mmdet's pipeline and padding data preprocessor), shrunk."""
    from mmdat.utils.visualize import visualize
    image = tmp_path / 'image.jpg'
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(image)
    overrides = {
        'model.backbone.arch': dict(_delete_=True, **TINY_ARCH),
        'model.neck.in_channels': TINY_ARCH['embed_dims'],
        'test_dataloader.dataset.pipeline.1.scale': (160, 120),
    }
    _, results = visualize(osp.join(REPO, 'configs/detection/mask_rcnn_dat_t_1x.py'), None,
                           str(image), str(tmp_path / 'det.png'), blocks=['2.1'],
                           cfg_options=overrides)
    (res, ) = results
    # resized 2x to 120x160 (h x w), padded to 128x160 (size_divisor 32): an 8x10 stage-3
    # map, r = 2 keys
    assert res.stride == 16 and res.points.shape[1:3] == (4, 5)
    assert (tmp_path / 'det.png').stat().st_size > 0
    with pytest.raises(ValueError, match='no deformable block'):
        visualize(osp.join(REPO, 'configs/detection/mask_rcnn_dat_t_1x.py'), None,
                  str(image), str(tmp_path / 'x.png'), blocks=['0.1'], cfg_options=overrides)


# ------------------------------------------------------------------ analysis/get_flops.py
#: the report's rows against the paper (the config tests hold ours to 3 %, 1 % for Tables 6-7)
REPORT_REL = 0.05


def test_get_flops_paper_rows_cover_every_table():
    """Every row of Tables 2-9 has a config (ours, or a toolbox's for the baselines) that
    loads; the DAT rows use our configs, the Swin rows the toolboxes'."""
    from mmdat.utils import paper_tables
    from mmdat.utils.complexity import load_config, task_of
    from mmdat.utils.paper_flops import TABLES, paper_rows
    rows = paper_rows()
    tables = paper_tables()
    for key, table in TABLES.items():
        ours = [r for r in rows if r.table == table]
        expected = tables[table]['variants'] if key in '89' else tables[table]
        assert len(ours) == len(expected), table
    for row in rows:
        cfg = load_config(row.config, row.overrides)
        task_of(cfg)
        backbone = cfg.model.backbone.type
        if row.baseline:
            assert 'Swin' in backbone and (row.note or '::' in row.config), row
        else:
            assert backbone in ('DAT', 'mmdat.DAT') and row.config.startswith(REPO), row
    assert [r.table for r in paper_rows(['4'])] == (
        [TABLES['4a']] * len(tables[TABLES['4a']]) + [TABLES['4b']] * len(tables[TABLES['4b']]))
    with pytest.raises(ValueError, match='unknown table'):
        paper_rows(['10'])


def test_get_flops_paper_rows_include_dat_pp():
    """--paper prints the DAT++ models too: every row of paper_tables_pp.yaml, each with its
    config (every DAT++ config), with `pp` picking them all."""
    import glob
    from mmdat.utils import paper_tables_pp
    from mmdat.utils.paper_flops import TABLES_PP, paper_rows
    rows = [r for r in paper_rows() if r.table in TABLES_PP.values()]
    assert rows == paper_rows(['pp'])
    assert len(rows) == sum(len(paper_tables_pp()[t]) for t in TABLES_PP.values())
    configs = sorted(glob.glob(osp.join(REPO, 'configs', '*', '*dat_pp_*.py')))
    assert sorted(r.config for r in rows) == configs
    assert [r.label for r in paper_rows(['pp-in1k'])] == [
        'DAT-T++ 224', 'DAT-S++ 224', 'DAT-B++ 224', 'DAT-B++ 384']


def test_unreachable_flops_record():
    """Each row recorded as out of the paper's reach is one of ours in the report, its
    recorded count is the one measured into the config's metafile, and it is indeed beyond
    the report's tolerance of the paper (a row that comes within it leaves the record)."""
    import yaml
    from mmdat.utils import UNREACHABLE_FLOPS
    from mmdat.utils.paper_flops import paper_rows
    marked = {r.unreachable.config: r for r in paper_rows() if r.unreachable}
    assert set(marked) == set(UNREACHABLE_FLOPS)
    for config, record in UNREACHABLE_FLOPS.items():
        row = marked[config]
        assert row.unreachable is record and not row.baseline
        assert row.config == osp.join(REPO, config) and row.table == record.table
        with open(osp.join(REPO, osp.dirname(config), 'metafile.yml')) as f:
            [entry] = [m for m in yaml.safe_load(f)['Models'] if m['Config'] == config]
        assert entry['Metadata']['FLOPs'] / 1e9 == pytest.approx(record.flops, abs=0.005)
        assert record.flops != pytest.approx(row.paper['flops'], rel=REPORT_REL), record
        assert record.reason


def test_get_flops_paper_marks_unreachable_rows(monkeypatch):
    """``--paper`` marks a recorded row's difference with ``*`` and prints the record's
    reason under the table (counts stubbed: the layout only)."""
    import importlib.util
    import io
    from mmdat.utils import UNREACHABLE_FLOPS, paper_flops

    def fake_count(rows, callback):
        results = []
        for row in rows:
            flops = row.unreachable.flops if row.unreachable else row.paper['flops']
            results.append(dict(params=row.paper['params'] * 1e6, flops=flops * 1e9))
            callback(row, results[-1])
        return results

    monkeypatch.setattr(paper_flops, 'count_rows', fake_count)
    monkeypatch.chdir(REPO)  # the report names configs relative to the working directory
    spec = importlib.util.spec_from_file_location(
        'get_flops', osp.join(TOOLS, 'analysis', 'get_flops.py'))
    get_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_flops)
    out = io.StringIO()
    get_flops.print_paper(['5'], file=out)
    out = out.getvalue()
    lines = {line.split()[-1]: line for line in out.splitlines()
             if line.startswith('table5') and line.split()[-1].startswith('configs/')}
    table5 = {c: r for c, r in UNREACHABLE_FLOPS.items() if r.table == 'table5_ade20k'}
    assert table5
    for config, line in lines.items():
        assert line.split()[-2].endswith('%*') == (config in table5), line
    for record in table5.values():
        assert f'{record.flops:.2f} G recorded): {record.reason}' in out


def _paper_report(*tables, timeout=600):
    """``{(table, config): [params, paper params, flops, paper flops]}`` of the report's
    rows (those with no note), and the report."""
    out = run_tool(osp.join('analysis', 'get_flops.py'), '--paper', '--tables', *tables,
                   timeout=timeout)
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].startswith('table') and cells[-1].endswith('.py'):
            rows[(cells[0], cells[-1])] = [None if c == '-' else float(c.rstrip('%'))
                                           for c in cells[-6:-2]]
    return rows, out


def test_get_flops_paper_table7_matches_paper():
    """Table 7 (DAT-T and its variants at 224): our params/FLOPs as the config tests accept
    them (0.01 M, 1 %), read from the report's rows."""
    from mmdat.utils import paper_tables
    rows, _ = _paper_report('7')
    paper = paper_tables()['table7_ablation_stages']
    assert len(rows) == len(paper)
    for params, paper_params, flops, paper_flops in rows.values():
        assert abs(params - paper_params) <= 0.01
        assert flops == pytest.approx(paper_flops, rel=0.01)
    assert {p['params'] for p in paper} == {r[1] for r in rows.values()}
    dat_t = rows[('table7_ablation_stages', 'configs/classification/dat_t_in1k.py')]
    from mmdat.utils.complexity import model_complexity
    ours = model_complexity(osp.join(REPO, 'configs/classification/dat_t_in1k.py'))
    assert dat_t[0] == pytest.approx(ours['params'] / 1e6, abs=0.005)
    assert dat_t[2] == pytest.approx(ours['flops'] / 1e9, abs=0.005)


def test_get_flops_single_config():
    out = run_tool(osp.join('analysis', 'get_flops.py'),
                   osp.join(REPO, 'configs/classification/dat_t_in1k.py'))
    assert 'Input shape: (3, 224, 224)' in out
    from mmdat.utils import paper_tables
    row = next(r for r in paper_tables()['table6_ablation_geometry']
               if (r['stages12'], r['offsets'], r['pos_embed']) == ('S', True, 'relative'))
    params = float(out.split('Params: ')[1].split()[0])
    flops = float(out.split('Flops: ')[1].split()[0])
    assert abs(params - row['params']) <= 0.01 and flops == pytest.approx(row['flops'], rel=0.01)


@pytest.mark.slow
def test_get_flops_paper_dat_pp_imagenet():
    """The DAT++ ImageNet rows of --paper: ours beside the figures quoted for the paper
    (Papers-with-Code: 4.3 / 9.4 / 16.6 / 49.7 GFLOPs, 24 / 53 / 93 M), within 1 %."""
    out = run_tool(osp.join('analysis', 'get_flops.py'), '--paper', '--tables', 'pp-in1k')
    rows = {}
    for line in out.splitlines():
        if line.startswith('pp_imagenet'):
            cells = line.split()
            config = next(c for c in cells if c.endswith('.py'))
            at = cells.index(config)
            rows[config] = [None if c == '-' else float(c.rstrip('%')) for c in cells[at - 5:at - 1]]
    assert len(rows) == 4, out[-3000:]
    for params, paper_params, flops, paper_flops in rows.values():
        assert flops == pytest.approx(paper_flops, rel=0.01)
        assert paper_params is None or abs(params - paper_params) < 1.0


@pytest.mark.slow
def test_get_flops_every_table():
    """The whole report (dense DAT-S/B models at 1280x800 and 512x2048: long on a CPU): every
    row within 5 % of the paper, but a row whose figure the paper's own figures put out of
    reach (``UNREACHABLE_FLOPS``) gives our recorded count, marked and explained."""
    from mmdat.utils import UNREACHABLE_FLOPS
    rows, out = _paper_report('2', '3', '4', '5', '6', '7', '8', '9', timeout=4 * 3600)
    for (table, config), (params, paper_params, flops, paper_flops) in rows.items():
        record = UNREACHABLE_FLOPS.get(config)
        if record is not None and record.table == table:
            assert flops == pytest.approx(record.flops, abs=0.01), (
                f'{config}: {flops} G, recorded {record.flops} G ({record.reason})')
        elif paper_flops is not None:
            assert flops == pytest.approx(paper_flops, rel=REPORT_REL), (
                f'{table} {config}: {flops} G, paper {paper_flops} G')
    for config, record in UNREACHABLE_FLOPS.items():
        assert (record.table, config) in rows
        assert record.reason in out


# ------------------------------------------------------------------ benchmark.py
def test_benchmark_dat_t_vs_swin_t():
    """DAT-T and mmpretrain's Swin-T in one run, alternately (tiny: 64x64, one iteration;
    Swin-T pads its small stage-3/4 maps to its window)."""
    out = run_tool('benchmark.py', osp.join(REPO, 'configs/classification/dat_t_in1k.py'),
                   '--other', 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
                   '--other-cfg-options', 'model.backbone.pad_small_map=True',
                   '--device', 'cpu', '--batch', 1, '--shape', 64, 64, '--iters', 1,
                   '--warmup', 0, '--train')
    for mode in ('inference', 'train step'):
        for name in ('dat_t_in1k.py', 'swin-tiny_16xb64_in1k.py'):
            line = next(l for l in out.splitlines() if l.startswith(mode) and name in l
                        and 'ratio' not in l)
            ips = float(line.split('images/s')[0].split()[-1])
            mem = float(line.split('peak memory')[1].split()[0])
            assert ips > 0 and mem > 0, line
        assert f'{mode:<11} ratio dat_t_in1k.py / swin-tiny_16xb64_in1k.py' in out


def test_benchmark_deformable_block():
    """Straightforward vs lean deformable block at a small size (the lean path in chunks of
    2 query rows): both timed and measured, same output and gradient."""
    out = run_tool('benchmark.py', '--block', 'deformable', '--shape', 160, 192, '--batch', 1,
                   '--iters', 1, '--warmup', 0, '--device', 'cpu', '--chunk-size', 12 * 24 * 120)
    assert '10x12 = 120 queries' in out
    for impl in ('reference', 'chunked'):
        line = next(l for l in out.splitlines() if l.startswith(impl))
        assert float(line.split('peak memory')[1].split()[0]) > 0
    diffs = out.split('max |diff| output ')[1]
    assert float(diffs.split(',')[0]) < 1e-4
    assert float(diffs.split('input grad ')[1].split()[0]) < 1e-4


def test_benchmark_table(monkeypatch, capsys, tmp_path):
    """``--table`` runs every setting's models alternately and prints one table (here one
    small setting of DAT-nano classifiers standing for DAT-T, DAT-T++ (also with
    cfg-options, as its rows without checkpointing) and Swin-T)."""
    spec = importlib.util.spec_from_file_location('benchmark', osp.join(REPO, 'tools',
                                                                        'benchmark.py'))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    models = []
    for name, arch, options in (('DAT-T', 'nano', None), ('DAT-T++', 'nano++', None),
                                ('DAT-T++, cp', 'nano++', {'model.backbone.with_cp': True}),
                                ('Swin-T', 'nano', None)):
        config = tmp_path / f'{len(models)}.py'
        config.write_text(f"_base_ = '{REPO}/configs/demo/dat_nano_shapes_cls.py'\n"
                          f"model = dict(backbone=dict(arch='{arch}'))\n")
        models.append((name, str(config), options))
    monkeypatch.setattr(benchmark, 'TABLE', [('64 classification', (64, 64), 2, False,
                                              models)])
    rows = benchmark.main(['--table', '--iters', '1', '--warmup', '0', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert len(rows) == 1 and len(rows[0][2]) == 4
    lines = [line for line in out.splitlines() if line.startswith('| 64 classification')]
    assert [line.split(' | ')[1] for line in lines] == ['DAT-T', 'DAT-T++', 'DAT-T++, cp',
                                                         'Swin-T']
    assert lines[-1].split(' | ')[3] == '1.00x'  # Swin-T against itself
