"""A real Asterisk 22 beside pbxguard: the harness of the ``tests/pbx`` tier.

:class:`~tests.support.pbx.site.PbxSite` unpacks the Asterisk runtime bundle named by
``PBXGUARD_ASTERISK_BUNDLE``, installs the project's own ``asterisk-config/`` into it with only
ports, secrets and the carrier's address changed, starts Asterisk, a TCP proxy in front of its
AMI port, and pjsua softphones (the site's phones and a "carrier" that the trunk dials), and
runs ``pbxguard run`` as a process against all of it. Everything listens on 127.0.0.1 on ports
chosen at run time, and every process is stopped by its PID when the site closes.
"""
