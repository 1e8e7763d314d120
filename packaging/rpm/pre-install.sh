# Creates the likewise system user (no login shell, home /var/lib/likewise) before
# the files that belong to its group are installed.
getent group likewise >/dev/null || groupadd --system likewise
getent passwd likewise >/dev/null || \
    useradd --system --gid likewise --home-dir /var/lib/likewise --no-create-home \
        --shell /sbin/nologin --comment "likewise server" likewise
exit 0
