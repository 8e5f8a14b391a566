from .paper import PAPER_TABLES, paper_tables
from .toolbox import TOOLBOXES, run_toolbox_tool, toolbox_of

__all__ = ['PAPER_TABLES', 'paper_tables', 'TOOLBOXES', 'run_toolbox_tool', 'toolbox_of']
