"""Code shared by cobalt's SDK, controller and worker runtime.

Only three things live here: the generated wire types (``cobalt_common.v1``),
the hardware vocabulary (``cobalt_common.hardware``) and the exception tree
(``cobalt_common.errors``). Nothing here imports the SDK, the controller or
the executors.
"""
