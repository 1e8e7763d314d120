# Data directory for runs without systemd (systemd creates it too), then register
# the unit. As is usual for RPM packages, the service is enabled by the system's
# preset policy and started by the administrator.
install -d -o likewise -g likewise -m 0700 /var/lib/likewise
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl preset likewise.service >/dev/null 2>&1 || :
    fi
fi
exit 0
