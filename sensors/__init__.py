"""Sensors and schedules that move campaigns forward."""
