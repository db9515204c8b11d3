"""Reports of a stored run: one self-contained HTML page, and JUnit XML that CI systems read right.

:mod:`~testrack.report.model` turns a run in the results store into plain data (tested
without a browser); :mod:`~testrack.report.html` writes the page that draws it;
:mod:`~testrack.report.junit` writes or rewrites JUnit XML with one test case per result
and one ``<testsuite>`` per device. ``testrack report`` (:mod:`~testrack.report.command`)
and ``pytest --rack-html`` (:mod:`~testrack.report.plugin`) use them.
"""
