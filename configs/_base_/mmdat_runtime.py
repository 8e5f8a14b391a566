# What every mmdat config adds to its toolbox's runtime: the toolboxes' own tools/*.py import
# mmdat (which registers DAT), and a resumed run replays the random numbers (drop path,
# augmentation) of an uninterrupted one.
custom_imports = dict(imports=['mmdat'], allow_failed_imports=False)
custom_hooks = [dict(type='ResumableRandomnessHook')]
