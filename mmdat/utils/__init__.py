from .paper import (PAPER_TABLES, PAPER_TABLES_PP, UNREACHABLE_FLOPS, Unreachable, paper_tables,
                    paper_tables_pp)
from .toolbox import TOOLBOXES, run_toolbox_tool, toolbox_of

__all__ = ['PAPER_TABLES', 'PAPER_TABLES_PP', 'paper_tables', 'paper_tables_pp',
           'UNREACHABLE_FLOPS', 'Unreachable', 'TOOLBOXES',
           'run_toolbox_tool', 'toolbox_of']
