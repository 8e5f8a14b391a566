from .hooks import ResumableRandomnessHook

__all__ = ['ResumableRandomnessHook']
