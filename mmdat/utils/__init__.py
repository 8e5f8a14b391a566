from .paper import PAPER_TABLES, UNREACHABLE_FLOPS, Unreachable, paper_tables
from .toolbox import TOOLBOXES, run_toolbox_tool, toolbox_of

__all__ = ['PAPER_TABLES', 'paper_tables', 'UNREACHABLE_FLOPS', 'Unreachable', 'TOOLBOXES',
           'run_toolbox_tool', 'toolbox_of']
