"""Reading a finished run and reporting on it: run view, metrics, plots, integrated-gradients maps
and the HTML page."""
