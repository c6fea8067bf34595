"""nbgrader configuration of a student's server on the course hub (the assignment list).

The hub points JUPYTER_CONFIG_PATH here for students (course/hub/jupyterhub_config.py).
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.CourseDirectory.course_id = "guided-descent"  # = course/nbgrader_config.py's
c.Exchange.root = os.environ.get("GD_NBGRADER_EXCHANGE") or "/srv/nbgrader/exchange"
# When every server runs under one Unix account (the hub's trial spawner), nbgrader
# must take the hub's user name, not the account's, for the student's.
if os.environ.get("GD_STUDENT_ID"):
    c.CourseDirectory.student_id = os.environ["GD_STUDENT_ID"]
