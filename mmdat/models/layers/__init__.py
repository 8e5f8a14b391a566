from .deformable_attention import DeformableAttention, deformable_attention
from .window_attention import WindowMSA, window_attention

__all__ = ['DeformableAttention', 'deformable_attention', 'WindowMSA', 'window_attention']
