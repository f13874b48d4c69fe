# meta-bootline's Python helpers (added to BitBake's path by conf/layer.conf: addpylib).
