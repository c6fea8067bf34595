"""Jupyter server configuration of an instructor's server on the course hub.

JupyterHub's single-user servers forbid being framed at all
(``frame-ancestors 'none'``), but nbgrader's formgrader opens inside
JupyterLab in an iframe of the same server: allow framing by the same origin.
"""

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.ServerApp.tornado_settings = {"headers": {"Content-Security-Policy": "frame-ancestors 'self'"}}
