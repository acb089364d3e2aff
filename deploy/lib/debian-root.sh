# Sourced by scripts that build a fresh Debian root with debootstrap (the
# package test, deploy/bare-root-check.sh). Nothing here names a mirror: the
# repositories are the ones this machine's apt is configured with.
#
#   debian_repos             sets SUITE (this machine's codename), REPOS (one
#                            "URI RELEASE COMPONENT" per configured repository
#                            of that suite's family) and MIRROR (the suite's
#                            own URI, for debootstrap); returns 1 if none
#   debian_root_apt ROOT     gives ROOT's apt the same repositories and the
#                            Acquire settings (validity, proxies) used here,
#                            and this machine's resolver

debian_repos() {
  # shellcheck source=/dev/null
  . /etc/os-release
  SUITE=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
  mapfile -t REPOS < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Created-By: Packages' | sort -u | awk -v s="$SUITE" '$2 == s || index($2, s "-") == 1')
  MIRROR=""
  local line uri release
  for line in "${REPOS[@]}"; do
    read -r uri release _ <<<"$line"
    if [[ $release == "$SUITE" ]]; then
      MIRROR=$uri
      return 0
    fi
  done
  return 1
}

debian_root_apt() {
  local root=$1 key value
  printf 'deb %s\n' "${REPOS[@]}" >"$root/etc/apt/sources.list"
  for key in Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy \
    Acquire::https::Proxy; do
    value=$(apt-config dump "$key" | awk -v k="$key" '$1 == k {print $2}' | tr -d '";')
    [[ -n $value ]] && echo "$key \"$value\";" >>"$root/etc/apt/apt.conf.d/90fairwatch-test"
  done
  cp /etc/resolv.conf "$root/etc/resolv.conf"
}
