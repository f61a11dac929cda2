"""Code shared by cobalt's SDK, controller and worker runtime.

Only what every side must agree on lives here: the generated wire types
(``cobalt_common.v1``) and their conversions (``cobalt_common.wire``), the
hardware vocabulary (``cobalt_common.hardware``), statuses
(``cobalt_common.status``), executor types and their options
(``cobalt_common.executor_types``), the exception tree
(``cobalt_common.errors``), prices, deployment settings, paths and the payload
layout. Nothing here imports the SDK, the controller or the executors.
"""
