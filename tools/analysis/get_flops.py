"""Parameters and FLOPs of a config, or of every table of the paper.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...]
    python tools/analysis/get_flops.py --paper [--tables 2 6 7 pp-in1k]

FLOPs are multiply-accumulates, counted as the toolboxes' own ``get_flops.py`` count them,
by default at the paper's input for the config's task: the size of the classifier's test
images (224 or 384), 1280x800 for detection (backbone, FPN and heads), 512x2048 for segmentation
(encoder and decode head). See :mod:`mmdat.utils.complexity`.

``--paper`` prints, table by table (DAT: 2, 3, 4a, 4b, 5, 6, 7, 8, 9; DAT++: pp-in1k,
pp-retinanet, pp-mask, pp-cascade, pp-ade20k; ``--tables`` picks some, ``pp`` all of DAT++'s),
our config's params/FLOPs next to the paper's, and the Swin baselines counted the same way
from the toolboxes' own configs. Dense models take a minute or more each on a CPU. A row
whose FLOPs the paper's own figures put out of reach is marked ``*`` and explained under the
table (the record is ``mmdat.utils.paper.UNREACHABLE_FLOPS``).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file or pkg::path')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                        help="input size (default: the paper's for the task)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--show-unsupported', action='store_true',
                        help='list the ops the counter skipped (elementwise ops, as usual)')
    parser.add_argument('--paper', action='store_true', help="every table of the paper")
    parser.add_argument('--tables', nargs='+', metavar='T',
                        help='with --paper: only these tables (2 3 4 4a 4b 5 6 7 8 9; DAT++: '
                        'pp-in1k pp-retinanet pp-mask pp-cascade pp-ade20k, or pp for all)')
    args = parser.parse_args(argv)
    if bool(args.config) == args.paper:
        parser.error('give a CONFIG or --paper')
    if args.tables and not args.paper:
        parser.error('--tables goes with --paper')
    return args


def _fmt(value, digits):
    return '-' if value is None else f'{value:.{digits}f}'


def print_paper(tables=None, file=sys.stdout):
    from mmdat.utils.paper_flops import count_rows, paper_rows
    rows = paper_rows(tables)
    header = (f'{"table":<32} {"row":<44} {"params M":>9} {"paper":>7} {"GFLOPs":>9} '
              f'{"paper":>7} {"dFLOPs":>7}  config')
    print(header, file=file)
    print('-' * len(header), file=file)

    def show(row, result):
        params, flops = result['params'] / 1e6, result['flops'] / 1e9
        paper = row.paper or {}
        diff = (f'{100 * (flops / paper["flops"] - 1):+.1f}%' if paper.get('flops')
                else '-') + ('*' if row.unreachable else '')
        label = ('[baseline] ' if row.baseline else '') + row.label
        config = osp.relpath(row.config) if osp.isabs(row.config) else row.config
        note = f'  ({row.note})' if row.note else ''
        print(f'{row.table:<32} {label:<44} {params:>9.2f} {_fmt(paper.get("params"), 2):>7} '
              f'{flops:>9.2f} {_fmt(paper.get("flops"), 2):>7} {diff:>7}  {config}{note}',
              file=file, flush=True)

    results = count_rows(rows, show)
    unreachable = [row for row in rows if row.unreachable]
    if unreachable:
        print("\n* the paper's figure is out of reach (its own figures disagree): the tests "
              'check our recorded count instead (mmdat.utils.paper.UNREACHABLE_FLOPS)',
              file=file)
        for row in unreachable:
            record = row.unreachable
            print(f'  {row.label} ({row.table}, {record.flops:.2f} G recorded): '
                  f'{record.reason}', file=file)
    return rows, results


def main(argv=None):
    args = parse_args(argv)
    import mmdat  # noqa: F401
    if args.paper:
        print_paper(args.tables)
        return
    from mmdat.utils.complexity import model_complexity
    result = model_complexity(args.config, args.shape, args.cfg_options)
    H, W = result['shape']
    split = '=' * 30
    print(f'{split}\nTask: {result["task"]}\nInput shape: (3, {H}, {W})\n'
          f'Flops: {result["flops"] / 1e9:.3f} GFLOPs (multiply-adds)\n'
          f'Params: {result["params"] / 1e6:.3f} M\n{split}')
    if args.show_unsupported and result['unsupported']:
        print('Ops the counter skipped: ' + ', '.join(
            f'{op} x{n}' for op, n in sorted(result['unsupported'].items())))


if __name__ == '__main__':
    main()
