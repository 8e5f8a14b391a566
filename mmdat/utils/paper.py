"""The papers' figures, table by table, for the config tests and
``tools/analysis/get_flops.py --paper``: ``mmdat/data/paper_tables.yaml`` (transcribed from the
DAT paper) and ``mmdat/data/paper_tables_pp.yaml`` (DAT++: the authors' READMEs and configs,
and the few figures other sources quote)."""
import os.path as osp
from functools import lru_cache

import yaml

DATA = osp.join(osp.dirname(osp.dirname(__file__)), 'data')
PAPER_TABLES = osp.join(DATA, 'paper_tables.yaml')
PAPER_TABLES_PP = osp.join(DATA, 'paper_tables_pp.yaml')


@lru_cache()
def paper_tables():
    """``{table_key: rows}`` as in ``paper_tables.yaml`` (e.g. ``'table5_ade20k'``)."""
    with open(PAPER_TABLES) as f:
        return yaml.safe_load(f)


@lru_cache()
def paper_tables_pp():
    """``{table_key: rows}`` as in ``paper_tables_pp.yaml`` (e.g. ``'pp_ade20k'``)."""
    with open(PAPER_TABLES_PP) as f:
        return yaml.safe_load(f)
