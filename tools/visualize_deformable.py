"""Draw the deformed sampling points of DAT's deformable attention over an image
(Figures 5-6 and Appendix C of the paper).

    python tools/visualize_deformable.py CONFIG CHECKPOINT IMAGE --out PNG
        [--blocks S.B ...] [--query Y X] [--topk K] [--max-points N] [--device cpu]
        [--cfg-options k=v ...]

CONFIG is any classification, detection or segmentation config with a DAT backbone
(``model.backbone``). The image goes through the config's test pipeline (annotation loading
left out) and the model's data preprocessor, as in the toolboxes' inference, and the points
are drawn over the image the network saw (resized/cropped as the pipeline does).

``--blocks``: deformable blocks as ``S.B`` (0-based stage and block index in
``backbone.stages``, e.g. ``2.5`` for DAT-T's last stage-3 block); default: the last deformable
block of every deformable stage. ``--query Y X`` (pixels of the image as drawn) with
``--topk K``: the K keys that query attends to most are circled (default query: the centre).
Prints the path of the PNG.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out', required=True, help='the PNG to write')
    parser.add_argument('--blocks', nargs='+', metavar='S.B', help='deformable blocks to draw')
    parser.add_argument('--query', nargs=2, type=float, metavar=('Y', 'X'),
                        help='query pixel (in the image as drawn) for --topk')
    parser.add_argument('--topk', type=int, default=0,
                        help='circle the keys the query attends to most (0: off)')
    parser.add_argument('--max-points', type=int, default=600,
                        help='thin dense maps to about this many points per panel')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import mmdat  # noqa: F401
    from mmdat.utils.visualize import visualize
    if args.query is not None and args.topk <= 0:
        args.topk = 10
    out, results = visualize(args.config, args.checkpoint, args.image, args.out,
                             blocks=args.blocks, query=args.query, topk=args.topk,
                             device=args.device, cfg_options=args.cfg_options,
                             max_points=args.max_points)
    print(out)
    return results


if __name__ == '__main__':
    main()
