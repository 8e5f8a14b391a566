from .toolbox import TOOLBOXES, run_toolbox_tool, toolbox_of

__all__ = ['TOOLBOXES', 'run_toolbox_tool', 'toolbox_of']
