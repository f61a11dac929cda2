"""Slurm: the building blocks a Slurm executor sits on.

- ``_cli``: Slurm's commands (``scontrol``, ``sbatch``, ``squeue``,
  ``scancel``; never ``sacct``) run as argument lists and answered as typed
  values, their failures as cobalt errors.
- ``_parse``: what those commands print, parsed (tested on captured output).
- ``_sbatch``: a hardware spec and the executor's options (partition, account,
  qos, ``gpu_types``, extra sbatch options, time margin) as ``sbatch`` options.
- ``_capacity``: whether a partition could ever run a spec, since Slurm
  accepts some impossible jobs and leaves them pending forever.

Nothing here holds global state: each object is built from its options and
used from any thread.
"""
