"""Model monitoring: reference profiles, drift, the payload log, ground-truth feedback and SLOs.

Pure pieces here (``profile``, ``drift``, ``payload``); the wiring (model servers, the API, the monitor loop) imports
them. Nothing in this package does I/O at import.
"""
