"""What every test shares: Hypothesis judges properties, never speed.

The suite runs on two processes beside brokers and databases it starts, so how long one
example takes says nothing about the code: no deadline and no too-slow health check
(speed is measured by ``make bench``, as ratios to the floor of the same run).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("tasklease", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tasklease")
