"""The daemon: lifecycle, schedule and back-off, holds, systemd notify, metrics and health."""
