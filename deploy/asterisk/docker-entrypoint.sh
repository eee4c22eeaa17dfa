#!/bin/sh
# Start Asterisk with the site's configuration and the AMI secret from the environment.
#
# The site's files (the project's asterisk-config/, mounted read-only at /etc/asterisk-site)
# are copied over the samples in /etc/asterisk at every start, so a changed file takes effect
# on `docker compose restart asterisk`. The AMI account [pbxguard] keeps the permissions its
# manager.conf gives it; its secret comes from $PBXGUARD_AMI_SECRET, appended to that account
# (`[pbxguard](+)`: Asterisk reads the last secret of an account), so no secret is in a file
# under version control. Arguments go to asterisk (the image runs `asterisk -f -n -vvv`).
set -eu

site=${ASTERISK_SITE_DIR:-/etc/asterisk-site}
etc=${ASTERISK_ETC_DIR:-/etc/asterisk}
asterisk=${ASTERISK_BINARY:-/usr/sbin/asterisk}

fail() {
  echo "docker-entrypoint: $*" >&2
  exit 78  # EX_CONFIG
}

secret=${PBXGUARD_AMI_SECRET:-}
[ -n "$secret" ] || fail "PBXGUARD_AMI_SECRET is not set: the AMI account pbxguard needs a secret"
case $secret in
  *";"* | *"
"* | " "* | *" ") fail "PBXGUARD_AMI_SECRET must be one line, without ';' or surrounding spaces" ;;
esac
case $secret in
  CHANGE-ME*) fail "PBXGUARD_AMI_SECRET is still the sample value: set a long random secret" ;;
esac

found=0
for file in "$site"/*.conf; do
  [ -e "$file" ] || continue
  cp "$file" "$etc/"
  found=1
done
[ "$found" = 1 ] || fail "no *.conf files in $site: mount the site's asterisk-config there"
grep -q '^\[pbxguard\]' "$etc/manager.conf" \
  || fail "$site/manager.conf has no [pbxguard] account (see asterisk-config/manager.conf)"

chmod 0600 "$etc/manager.conf"
cat >> "$etc/manager.conf" <<CONF

; Added by docker-entrypoint.sh from PBXGUARD_AMI_SECRET.
[pbxguard](+)
secret = $secret
CONF

exec "$asterisk" "$@"
