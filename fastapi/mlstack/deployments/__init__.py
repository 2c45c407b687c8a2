"""``/deployments``: ModelDeployments (the operator's contract) created, listed, read and deleted by the API.

Two backends with one interface (``create``/``list``/``get``/``delete``):

* ``local.LocalDeployments`` (``MLSTACK_MODE=local``): served on this machine, ``onnx`` as a
  ``mlstack serve`` process and ``rayserve`` as an application in local Ray Serve; records in
  Redis so that an API restart brings them back; status computed by the operator's own state
  machine (``mlstack_operator.status``) so the fields and conditions are the same. What serves each one is in
  ``local_children``; ``local_routing.LocalRouter`` routes ``/inference`` to them.
* ``kube.KubeDeployments`` (``MLSTACK_MODE=cluster``): the ModelDeployment custom resources through
  the Kubernetes API; the operator does the serving. ``kube.KubeEndpoints`` routes ``/inference``
  to the ``status.url`` of a Ready ModelDeployment.

``setup.start`` wires the chosen backend into the API's services.
"""
