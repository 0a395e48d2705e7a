"""Package names for the generated closures, after a Debian- or Guix-like distribution.

Only names: sizes and references are drawn by gen_store.py.  When a pool runs
out, synth_name makes up a plausible one.
"""
import random

# (name, size in KB): items with no references
DATA = [("tzdata-2024a", 2300), ("nss-certs-3.101", 620), ("iana-etc-20240125", 410),
        ("font-dejavu-2.37", 9800), ("hicolor-icon-theme-0.17", 60), ("xkeyboard-config-2.41", 4400),
        ("mime-info-0.21", 300), ("unicode-data-15.1.0", 1900), ("publicsuffix-list-20240208", 240),
        ("sgml-base-1.31", 40), ("pci-ids-2024", 1300), ("usb-ids-2024", 650), ("iso-codes-4.16.0", 3100),
        ("adwaita-icon-theme-46.0", 8200), ("tzdata-legacy-2024a", 700), ("wireless-regdb-2024", 20),
        ("dbus-data-1.14.10", 90), ("fontconfig-config-2.14.2", 120), ("ca-certificates-java-2024", 210),
        ("xml-core-0.19", 30), ("libwacom-data-2.10", 500), ("poppler-data-0.4.12", 4200)]

# (name, size in MB, level as a fraction of the depth)
BIG = [("icu4c-74.2", 32, 0.25), ("perl-5.36.0", 22, 0.4), ("llvm-18.1.8", 48, 0.6), ("python-3.11.9", 40, 0.75),
       ("mesa-24.0.4", 42, 0.7), ("qtbase-6.7.2", 35, 0.8), ("boost-1.83.0", 30, 0.5), ("ffmpeg-6.1.1", 24, 0.75),
       ("openjdk-21.0.2", 58, 0.6), ("ghc-9.6.4", 55, 0.5), ("gtk-3.24.41", 26, 0.85), ("webkitgtk-2.44.0", 60, 0.9),
       ("rust-std-1.77.2", 45, 0.45), ("guile-3.0.9", 21, 0.5), ("ruby-3.3.0", 23, 0.6), ("emacs-29.3", 52, 0.9),
       ("texlive-bin-2024", 38, 0.7), ("opencv-4.9.0", 44, 0.85), ("gdal-3.8.4", 33, 0.8), ("vtk-9.3.0", 57, 0.9),
       ("poppler-24.02.0", 20, 0.8), ("postgresql-libs-16.2", 21, 0.55), ("gstreamer-1.22.11", 20, 0.8),
       ("nodejs-20.11.1", 50, 0.65)]

# (name, low MB, high MB, level as a fraction of the depth)
MEDIUM = [("openssl-3.0.13", 4, 7, 0.3), ("coreutils-9.1", 6, 10, 0.5), ("bash-5.2.15", 3, 6, 0.45),
          ("sqlite-3.45.1", 1.8, 3, 0.3), ("util-linux-2.39.3-lib", 2, 4.5, 0.2), ("glib-2.78.4", 4, 9, 0.5),
          ("gnutls-3.8.3", 2.5, 5, 0.45), ("libxml2-2.11.7", 2, 3.5, 0.35), ("krb5-1.21.2", 2.5, 4, 0.45),
          ("file-5.45", 6, 9, 0.3), ("curl-8.6.0", 2, 3, 0.6), ("binutils-2.41", 5, 9, 0.4),
          ("libgcrypt-1.10.3", 2, 2.6, 0.35), ("gettext-minimal-0.22.4", 3, 8, 0.4), ("cairo-1.18.0", 2.2, 3, 0.65),
          ("harfbuzz-8.3.0", 2, 4, 0.6), ("freetype-2.13.2", 2, 2.5, 0.45), ("tcl-8.6.14", 3, 6, 0.45),
          ("pango-1.51.2", 2, 3, 0.7), ("elfutils-0.190", 2.5, 4, 0.4), ("libx11-1.8.7", 2.5, 4, 0.5),
          ("gmp-6.3.0", 2, 2.5, 0.25), ("ncurses-6.4", 2, 3.5, 0.2), ("lua-5.4.6", 2, 2.4, 0.3)]

SMALL = """libffi-3.4.4 xz-5.4.5 bzip2-1.0.8 expat-2.5.0 readline-8.2 libunistring-1.1 libidn2-2.3.7 pcre2-10.42
libsodium-1.0.19 libgpg-error-1.47 nettle-3.9.1 mpfr-4.2.1 libtasn1-4.19.0 p11-kit-0.25.3 libseccomp-2.5.5
acl-2.3.2 attr-2.5.2 libcap-2.69 libxcrypt-4.4.36 libpsl-0.21.5 nghttp2-1.58.0 brotli-1.1.0 zstd-1.5.5
lz4-1.9.4 libssh2-1.11.0 libedit-20230828 libevent-2.1.12 libuv-1.48.0 c-ares-1.27.0 libyaml-0.2.5
jansson-2.14 libxslt-1.1.39 libpng-1.6.42 libjpeg-turbo-3.0.2 libtiff-4.6.0 libwebp-1.3.2 fontconfig-2.14.2
fribidi-1.0.13 pixman-0.42.2 gdk-pixbuf-2.42.10 libxcb-1.16 libxau-1.0.11 libxdmcp-1.1.4 libxext-1.3.6
libxrender-0.9.11 dbus-1.14.10 eudev-3.2.14 libusb-1.0.27 lmdb-0.9.31 gdbm-1.23 bdb-5.3.28 libltdl-2.4.7
libbsd-0.12.1 libmd-1.1.0 json-c-0.17 oniguruma-6.9.9 libarchive-3.7.2 keyutils-1.6.3 e2fsprogs-libs-1.47.0
mpdecimal-2.5.1 libnsl-2.0.1 libtirpc-1.3.4 libmnl-1.0.5 libnftnl-1.2.6 iptables-libs-1.8.10 libpcap-1.10.4
kmod-31 libaio-0.3.113 numactl-2.0.18 libverto-0.3.2 cyrus-sasl-2.1.28 openldap-libs-2.6.7 libgsasl-2.2.1
libmicrohttpd-1.0.1 libnl-3.9.0 libdrm-2.4.120 libepoxy-1.5.10 wayland-1.22.0 libxkbcommon-1.6.0 libinput-1.25.0
mtdev-1.1.6 libevdev-1.13.1 graphite2-1.3.14 libthai-0.1.29 libdatrie-0.2.13 lcms2-2.16 openjpeg-2.5.2
giflib-5.2.1 libexif-0.6.24 libogg-1.3.5 libvorbis-1.3.7 flac-1.4.3 opus-1.4 libsndfile-1.2.2 speex-1.2.1
alsa-lib-1.2.11 pulseaudio-libs-17.0 libsamplerate-0.2.2 libxml++-5.0.3 yajl-2.1.0 libconfig-1.7.3 talloc-2.4.2
tdb-1.4.10 tevent-0.16.1 libcbor-0.11.0 libfido2-1.14.0 libnghttp3-1.1.0 ngtcp2-1.3.0 libssh-0.10.6 gpgme-1.23.2
libassuan-2.5.6 libksba-1.6.6 npth-1.7 pinentry-1.2.1 libsecret-0.21.4 popt-1.19 libnettle-compat-1.0 libmaxminddb-1.9.1
hiredis-1.2.0 msgpack-c-6.0.0 protobuf-c-1.5.0 libzip-1.10.1 minizip-1.3.1 snappy-1.1.10 leveldb-1.23 rocksdb-lite-8.10.0
double-conversion-3.3.0 fmt-10.2.1 spdlog-1.13.0 yaml-cpp-0.8.0 jsoncpp-1.9.5 tinyxml2-10.0.0 pugixml-1.14 libgit2-1.7.2
http-parser-2.9.4 llhttp-9.2.0 libwebsockets-4.3.3 mosquitto-libs-2.0.18 libcurl-gnutls-8.6.0 gsl-2.7.1 fftw-3.3.10
openblas-0.3.26 lapack-3.12.0 hdf5-libs-1.14.3 netcdf-4.9.2 proj-9.4.0 geos-3.12.1 libspatialite-5.1.0 libgeotiff-1.7.1
python-six-1.16.0 python-certifi-2024.2.2 python-idna-3.6 python-urllib3-2.2.1 python-requests-2.31.0
python-charset-normalizer-3.3.2 python-markupsafe-2.1.5 python-jinja2-3.1.3 python-click-8.1.7
python-itsdangerous-2.1.2 python-werkzeug-3.0.1 python-flask-3.0.2 python-pyyaml-6.0.1 python-cffi-1.16.0
python-pycparser-2.21 python-attrs-23.2.0 python-packaging-24.0 python-typing-extensions-4.10.0 python-dateutil-2.9.0
python-pytz-2024.1 python-psycopg2-2.9.9 python-sqlalchemy-2.0.28 python-greenlet-3.0.3 python-gunicorn-21.2.0
perl-uri-5.27 perl-http-message-6.45 perl-libwww-6.77 perl-try-tiny-0.31 perl-encode-locale-1.05 perl-io-html-1.004
perl-lwp-mediatypes-6.04 perl-http-date-6.06 perl-timedate-2.33 perl-html-parser-3.81 perl-html-tagset-3.24
guile-json-4.7.3 guile-gcrypt-0.4.0 guile-zlib-0.1.0 guile-lzlib-0.0.2 guile-sqlite3-0.1.3 guile-git-0.5.2
guile-ssh-0.16.4 guile-avahi-0.4.1 gnutls-guile-4.0.0 avahi-0.8 libdaemon-0.14 nss-mdns-0.15.1 shadow-libs-4.14.5
pam-1.5.3 audit-libs-3.1.2 libselinux-3.6 libsepol-3.6 libsemanage-3.6 cracklib-2.9.11 libpwquality-1.4.5
procps-4.0.4 psmisc-23.7 findutils-4.9.0 grep-3.11 sed-4.9 gawk-5.3.0 diffutils-3.10 tar-1.35 gzip-1.13
less-643 which-2.21 hostname-3.23 net-base-6.4 iproute2-6.7.0 iputils-20240117 sysvinit-utils-3.08
mawk-1.3.4 debianutils-5.16 base-files-13 dash-0.5.12 tini-0.19.0""".split()

APPS = """myservice-2.4.1 nginx-1.25.4 git-minimal-2.44.0 postgresql-16.2 redis-7.2.4 jq-1.7.1 openssh-9.7p1
rsync-3.2.7 ripgrep-14.1.0 htop-3.3.0 tmux-3.4 vim-9.1.0 prometheus-2.50.1 grafana-10.4.0 caddy-2.7.6
mariadb-11.3.2 rabbitmq-3.13.0 unbound-1.19.1 knot-resolver-5.7.1 squid-6.8 exim-4.97 dovecot-2.3.21
bind-9.18.24 samba-4.20.0 cups-2.4.7 nftables-1.0.9 wireguard-tools-1.0 restic-0.16.4 borg-1.2.8
syncthing-1.27.4 gitea-1.21.7 mattermost-9.5 nextcloud-28.0 matrix-synapse-1.102 certbot-2.9.0
ansible-core-2.16 terraform-1.7.4 vault-1.15.6 consul-1.17.3""".split()

SIBLING_APPS = """otherservice-0.9.3 haproxy-2.9.6 memcached-1.6.24 mosquitto-2.0.18 varnish-7.4.2
traefik-2.11.0 envoy-1.29.1 coredns-1.11.1 minio-2024.03 etcd-3.5.12""".split()

_SYLLABLES = "ab ac ad al am an ar as at ba be bi bo ca ce ci co da de di do el em en er es fa fe fi " \
             "ga ge gi go ha he hi ka ke ki la le li lo ma me mi mo na ne ni no pa pe pi po ra re ri " \
             "ro sa se si so ta te ti to va ve vi xa xe za ze zi".split()


def synth_name(rng: random.Random) -> str:
    """A made-up library name with a version, for pools that ran out."""
    stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return f"lib{stem}-{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
