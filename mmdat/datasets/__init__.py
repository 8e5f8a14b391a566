from .synthetic import (CLASSES, SEG_CLASSES, make_classification, make_detection,
                        make_segmentation)

__all__ = ['CLASSES', 'SEG_CLASSES', 'make_classification', 'make_detection',
           'make_segmentation']
