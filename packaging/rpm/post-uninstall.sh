# After an upgrade, restart a running service on the new binary. RPM has no purge:
# the data in /var/lib/likewise stays until the administrator deletes it.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart likewise.service >/dev/null 2>&1 || :
    fi
fi
exit 0
