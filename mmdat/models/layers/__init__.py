from .ddetr_attention import DeformableDETRAttention, ddetr_attention
from .deformable_attention import DeformableAttention, deformable_attention
from .neighborhood_attention import NeighborhoodAttention, neighborhood_attention
from .spatial_reduction_attention import SpatialReductionAttention
from .window_attention import WindowMSA, window_attention

__all__ = [
    'DeformableAttention', 'deformable_attention', 'DeformableDETRAttention', 'ddetr_attention',
    'NeighborhoodAttention', 'neighborhood_attention',
    'SpatialReductionAttention', 'WindowMSA', 'window_attention'
]
