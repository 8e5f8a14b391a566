"""The paper's figures, table by table (``mmdat/data/paper_tables.yaml``, transcribed from
the DAT paper), for the config tests and ``tools/analysis/get_flops.py --paper``."""
import os.path as osp
from functools import lru_cache

import yaml

PAPER_TABLES = osp.join(osp.dirname(osp.dirname(__file__)), 'data', 'paper_tables.yaml')


@lru_cache()
def paper_tables():
    """``{table_key: rows}`` as in ``paper_tables.yaml`` (e.g. ``'table5_ade20k'``)."""
    with open(PAPER_TABLES) as f:
        return yaml.safe_load(f)
