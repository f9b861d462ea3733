//! Socket addresses: [`Address`], the Rust form of tsocket's `tsocket_address`.
//!
//! An [`Address`] is either an *inet* address (IPv4 or IPv6, always with a
//! port) or a *unix* address (a filesystem path, or on Linux a name in the
//! abstract namespace). It is a plain value: cheap to clone, comparable,
//! hashable, `Send` and `Sync`.
//!
//! # Where addresses come from
//!
//! | C (tsocket)                                    | Rust                                   |
//! |------------------------------------------------|----------------------------------------|
//! | `tsocket_address_inet_from_strings`            | [`Address::inet_from_strings`]         |
//! | `tsocket_address_inet_from_hostport_strings`   | [`Address::inet_from_hostport_strings`]|
//! | `tsocket_address_unix_from_path`               | [`Address::unix_from_path`]            |
//! | `tsocket_address_bsd_from_sockaddr`            | [`Address::from_sockaddr_storage`], [`Address::from_raw_sockaddr`] |
//! | `tsocket_address_bsd_sockaddr`                 | [`Address::to_sockaddr`]               |
//! | `tsocket_address_string`                       | [`Display`](fmt::Display)              |
//! | `tsocket_address_copy`                         | [`Clone`]                              |
//! | `tsocket_address_is_inet` / `_is_unix`         | [`Address::is_inet`], [`Address::is_unix`] |
//! | `tsocket_address_inet_addr_string` / `_port`   | [`Address::inet_addr_string`], [`Address::inet_port`] |
//! | `tsocket_address_inet_set_port`                | [`Address::set_inet_port`]             |
//! | `tsocket_address_unix_path`                    | [`Address::unix_path`]                 |
//!
//! Every constructor checks its input and returns an [`AddressError`] for bad
//! input; no function in this module panics, whatever it is given. Each
//! error keeps the errno that tsocket sets for the same failure
//! ([`AddressError::errno`]).
//!
//! [`Address`] documents the string form and the few places where this
//! crate differs from tsocket.

use std::error::Error;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::str::FromStr;

/// Offset of `sun_path` inside `sockaddr_un` (2 on Linux and the BSDs): a
/// unix sockaddr of exactly this length is the unnamed address.
const SUN_PATH_OFFSET: usize = mem::offset_of!(libc::sockaddr_un, sun_path);

/// Size of the `sun_path` array (108 on Linux, 104 on the BSDs and macOS).
const SUN_PATH_LEN: usize = mem::size_of::<libc::sockaddr_un>() - SUN_PATH_OFFSET;

/// One past the last byte of `ss_family`: the shortest sockaddr that still
/// names its family.
const FAMILY_END: usize =
    mem::offset_of!(libc::sockaddr_storage, ss_family) + mem::size_of::<libc::sa_family_t>();

/// At most this many characters of the offending input are shown by an
/// error's `Display`; [`AddressError::input`] keeps all of it.
const MAX_SHOWN_INPUT: usize = 200;

/// A socket address: IPv4 or IPv6 with a port, or a unix socket path.
///
/// This is tsocket's `tsocket_address`.
///
/// Invariants, which every constructor checks:
///
/// - a unix path has at most [`Address::UNIX_PATH_MAX`] bytes and no NUL
///   byte, so it always fits in `sun_path` with its terminating NUL;
/// - an abstract unix name has at most [`Address::UNIX_PATH_MAX`] bytes (it
///   fills `sun_path` after the leading NUL);
/// - an inet address always has a port (0 means "any port").
///
/// Two addresses are equal when they name the same endpoint in the same
/// way: same family, same IP, port, IPv6 flow label and scope id, or the
/// same path bytes (no normalisation: `/tmp/s` and `/tmp//s` differ).
///
/// ```
/// use tsocket::Address;
///
/// let addr = Address::inet_from_strings("ip", Some("192.0.2.7"), 445)?;
/// assert!(addr.is_inet("ipv4"));
/// assert_eq!(addr.to_string(), "ipv4:192.0.2.7:445");
/// assert_eq!("ipv4:192.0.2.7:445".parse::<Address>()?, addr);
/// # Ok::<(), tsocket::AddressError>(())
/// ```
///
/// # The string form
///
/// [`Display`](fmt::Display) prints tsocket's string form, byte for byte:
/// `ipv4:1.2.3.4:445`, `ipv6:2001:db8::1:445`, `unix:/run/x.sock`. IPv6
/// addresses are printed without brackets, exactly as `inet_ntop(3)` prints
/// them (glibc's rules, including the `::ffff:1.2.3.4` and `::1.2.3.4`
/// forms), so the unspecified address on port 1234 prints as `ipv6::::1234`.
///
/// tsocket's C documentation says this string is for display and logging and
/// must not be parsed. This crate parses it anyway: [`FromStr`] reads the
/// printed form back (the port is whatever follows the *last* colon), and
/// also accepts `ipv6:[ADDR]:PORT`. Parsing what `Display` printed gives back
/// an equal address, with the exceptions listed below.
///
/// # Differences from tsocket
///
/// Each difference either keeps information that tsocket loses or rejects
/// input that tsocket silently misreads:
///
/// - **IPv6 scope ids.** An IPv6 address with a non-zero scope id (a
///   link-local address taken from the kernel, or written `fe80::1%2` or
///   `fe80::1%eth0`) prints as `ipv6:fe80::1%2:445`, and
///   [`Address::inet_addr_string`] gives `fe80::1%2`. tsocket drops the scope
///   id from its strings. Addresses whose scope id is 0 print exactly as in
///   tsocket.
/// - **IPv4 text is strict dotted-quad.** `getaddrinfo(3)` also accepts the
///   `inet_aton(3)` shorthands (`127.1`, `0x7f000001`, octal `010.0.0.1`);
///   they are rejected here, because they are easy to misread.
/// - **Interior NUL bytes** in a unix path are an error; C would silently
///   cut the path at the NUL.
/// - **Abstract unix sockets** (Linux: a `sun_path` that starts with a NUL
///   byte) are supported, see [`Address::unix_abstract`]. tsocket reports
///   them as the empty path. Their string form is `unix:@NAME`, with every
///   byte outside printable ASCII, and `\` itself, written as `\xNN`; the
///   string form reads back to the same name.
/// - **`inet_from_hostport_strings`** rejects text before `[`; tsocket
///   ignores it.
///
/// # What is not guaranteed
///
/// - The string form does not carry the IPv6 flow label (`sin6_flowinfo`):
///   an address taken from the kernel with a non-zero flow label prints and
///   parses back with a flow label of 0, so it compares unequal. Everything
///   else about an inet address survives the round trip.
/// - A unix path that is not valid UTF-8 prints lossily (invalid bytes become
///   U+FFFD), so it does not parse back to the same path.
/// - A *relative* unix path that begins with `@` prints like an abstract
///   name, and [`FromStr`] reads that string as an abstract name (or rejects
///   it, if a `\` in it does not start a `\xNN` escape). Write such a path
///   as `./@name`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    repr: Repr,
}

/// The private representation; the enum is not public so that the
/// invariants documented on [`Address`] cannot be bypassed.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// IPv4 or IPv6 with a port (and, for IPv6, flow label and scope id).
    Inet(SocketAddr),
    /// A filesystem path; empty for the unnamed address.
    UnixPath(PathBuf),
    /// A name in Linux's abstract namespace, without the leading NUL.
    UnixAbstract(Vec<u8>),
}

/// The inet family named by a family string.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    /// `"ip"`: IPv4 or IPv6, whichever the address text is.
    Any,
    /// `"ipv4"`.
    V4,
    /// `"ipv6"`.
    V6,
}

impl Family {
    /// Parses tsocket's family names, ignoring ASCII case.
    fn parse(name: &str) -> Option<Family> {
        if name.eq_ignore_ascii_case("ip") {
            Some(Family::Any)
        } else if name.eq_ignore_ascii_case("ipv4") {
            Some(Family::V4)
        } else if name.eq_ignore_ascii_case("ipv6") {
            Some(Family::V6)
        } else {
            None
        }
    }
}

impl Address {
    /// The longest unix path (and abstract name), in bytes, that an address
    /// can hold: `sizeof(sun_path) - 1`, which is 107 on Linux and 103 on
    /// the BSDs and macOS.
    pub const UNIX_PATH_MAX: usize = SUN_PATH_LEN - 1;

    /// Makes an inet address from a family name, a numeric address and a
    /// port (`tsocket_address_inet_from_strings`).
    ///
    /// `family` is `"ip"` (IPv4 or IPv6, whichever `addr` is), `"ipv4"` or
    /// `"ipv6"`, in any ASCII case. `addr` must be a numeric address: IPv4
    /// in dotted-quad form, or IPv6 in any form `inet_pton(3)` accepts,
    /// optionally followed by a scope, `%` and an interface index or name
    /// (`fe80::1%2`, `fe80::1%eth0`; a name is looked up with
    /// `if_nametoindex(3)`). Host names are never resolved: no DNS, no
    /// `/etc/hosts`. `None` means the unspecified address: `0.0.0.0` for
    /// `"ipv4"`, `::` for `"ipv6"` and `"ip"`.
    ///
    /// # Errors
    ///
    /// - [`AddressErrorKind::UnsupportedFamily`] (`EAFNOSUPPORT`) if
    ///   `family` is none of the three names;
    /// - [`AddressErrorKind::InvalidAddress`] (`EINVAL`) if `addr` is not a
    ///   numeric address, is an address of the other family (an IPv4
    ///   address with `"ipv6"` or the reverse), or has a scope that is not
    ///   a known interface.
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ipv6", Some("2001:db8::1"), 445)?;
    /// assert_eq!(a.to_string(), "ipv6:2001:db8::1:445");
    ///
    /// let any = Address::inet_from_strings("ip", None, 1234)?;
    /// assert_eq!(any.to_string(), "ipv6::::1234");
    ///
    /// let err = Address::inet_from_strings("ipv4", Some("example.com"), 80).unwrap_err();
    /// assert_eq!(err.errno(), libc::EINVAL);
    /// let err = Address::inet_from_strings("ipx", None, 80).unwrap_err();
    /// assert_eq!(err.errno(), libc::EAFNOSUPPORT);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn inet_from_strings(
        family: &str,
        addr: Option<&str>,
        port: u16,
    ) -> Result<Address, AddressError> {
        let family = Family::parse(family).ok_or_else(|| {
            AddressError::new(
                AddressErrorKind::UnsupportedFamily,
                family,
                "expected \"ip\", \"ipv4\" or \"ipv6\"",
            )
        })?;
        let sa = match addr {
            None if family == Family::V4 => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            None => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            Some(text) => parse_inet(family, text, port)?,
        };
        Ok(Address::from(sa))
    }

    /// Makes an inet address from a `host[:port]` string
    /// (`tsocket_address_inet_from_hostport_strings`).
    ///
    /// `host_port` is read in the first of these shapes that matches:
    ///
    /// 1. `[ADDR]:PORT` or `[ADDR]`: the text between the first `[` and the
    ///    last `]` is the address; after the `]` there must be nothing (the
    ///    port is `default_port`) or `:` and a port;
    /// 2. `ADDR:PORT` if the string contains a `.` and a `:`: the port is
    ///    what follows the last `:` (this is how `1.2.3.4:445` is read);
    /// 3. otherwise the whole string is the address, with `default_port`
    ///    (this is how an unbracketed IPv6 address such as `::1` is read).
    ///
    /// A port is one or more ASCII decimal digits with a value of at most
    /// 65535 (leading zeros are allowed, signs and spaces are not). The
    /// address and `family` are then checked as by
    /// [`inet_from_strings`](Address::inet_from_strings). `None` gives the
    /// unspecified address of `family` with `default_port`.
    ///
    /// Because of rule 2, an IPv6 address with an embedded IPv4 part
    /// (`::ffff:1.2.3.4`) must be written in brackets; without them the text
    /// after its last `:` is taken for a port, and it is rejected.
    ///
    /// # Errors
    ///
    /// - [`AddressErrorKind::Malformed`] (`EINVAL`) if there is text before
    ///   the `[` or anything but `:PORT` after the `]`;
    /// - [`AddressErrorKind::InvalidPort`] (`EINVAL`) if the port is not a
    ///   decimal number up to 65535;
    /// - every error of [`inet_from_strings`](Address::inet_from_strings).
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_hostport_strings("ip", Some("[2001:db8::1]:8080"), 80)?;
    /// assert_eq!(a.inet_port(), Some(8080));
    /// let b = Address::inet_from_hostport_strings("ip", Some("192.0.2.1:8080"), 80)?;
    /// assert_eq!(b.to_string(), "ipv4:192.0.2.1:8080");
    /// let c = Address::inet_from_hostport_strings("ipv6", Some("::1"), 80)?;
    /// assert_eq!(c.to_string(), "ipv6:::1:80");
    ///
    /// assert!(Address::inet_from_hostport_strings("ip", Some("[::1]:99999"), 80).is_err());
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn inet_from_hostport_strings(
        family: &str,
        host_port: Option<&str>,
        default_port: u16,
    ) -> Result<Address, AddressError> {
        match host_port {
            None => Address::inet_from_strings(family, None, default_port),
            Some(text) => {
                let (host, port) = split_host_port(text, default_port)?;
                Address::inet_from_strings(family, Some(host), port)
            }
        }
    }

    /// Makes a unix address from a filesystem path
    /// (`tsocket_address_unix_from_path`).
    ///
    /// The path is kept byte for byte; it is not checked against the
    /// filesystem and not normalised. The empty path is allowed and is the
    /// *unnamed* address (what C tsocket makes from a `NULL` path): a socket
    /// that is not bound to a name.
    ///
    /// # Errors
    ///
    /// - [`AddressErrorKind::NameTooLong`] (`ENAMETOOLONG`) if the path is
    ///   longer than [`Address::UNIX_PATH_MAX`] bytes;
    /// - [`AddressErrorKind::InvalidPath`] (`EINVAL`) if it contains a NUL
    ///   byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::unix_from_path("/run/samba/ncalrpc/np")?;
    /// assert_eq!(a.to_string(), "unix:/run/samba/ncalrpc/np");
    /// assert_eq!(a.unix_path(), Some(std::path::Path::new("/run/samba/ncalrpc/np")));
    ///
    /// let long = "x".repeat(Address::UNIX_PATH_MAX + 1);
    /// let err = Address::unix_from_path(&long).unwrap_err();
    /// assert_eq!(err.errno(), libc::ENAMETOOLONG);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn unix_from_path(path: impl AsRef<Path>) -> Result<Address, AddressError> {
        let path = path.as_ref();
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() > Address::UNIX_PATH_MAX {
            return Err(AddressError::new(
                AddressErrorKind::NameTooLong,
                path.to_string_lossy(),
                format!(
                    "{} bytes, but at most {} fit in sun_path",
                    bytes.len(),
                    Address::UNIX_PATH_MAX
                ),
            ));
        }
        if bytes.contains(&0) {
            return Err(AddressError::new(
                AddressErrorKind::InvalidPath,
                path.to_string_lossy(),
                "the path contains a NUL byte",
            ));
        }
        Ok(Address {
            repr: Repr::UnixPath(path.to_path_buf()),
        })
    }

    /// Makes a unix address in Linux's abstract namespace.
    ///
    /// `name` is the name without the leading NUL byte that marks the
    /// abstract namespace in `sun_path`; it may contain any bytes, NUL
    /// included, and may be empty. Only Linux (and Android) give these
    /// addresses a meaning; elsewhere the kernel rejects or misreads them.
    /// tsocket has no such constructor (it reports abstract addresses as the
    /// empty path); see [`Address`] for its string form.
    ///
    /// # Errors
    ///
    /// [`AddressErrorKind::NameTooLong`] (`ENAMETOOLONG`) if `name` is
    /// longer than [`Address::UNIX_PATH_MAX`] bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::unix_abstract("samba\0ctl")?;
    /// assert_eq!(a.to_string(), "unix:@samba\\x00ctl");
    /// assert_eq!(a.unix_abstract_name(), Some(&b"samba\0ctl"[..]));
    /// assert_eq!(a.unix_path(), None);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn unix_abstract(name: impl AsRef<[u8]>) -> Result<Address, AddressError> {
        let name = name.as_ref();
        if name.len() > Address::UNIX_PATH_MAX {
            let mut shown = String::new();
            write_escaped(&mut shown, name).ok();
            return Err(AddressError::new(
                AddressErrorKind::NameTooLong,
                format!("@{shown}"),
                format!(
                    "{} bytes, but at most {} fit in sun_path after the leading NUL",
                    name.len(),
                    Address::UNIX_PATH_MAX
                ),
            ));
        }
        Ok(Address {
            repr: Repr::UnixAbstract(name.to_vec()),
        })
    }

    /// Reads a socket address that the kernel filled in
    /// (`tsocket_address_bsd_from_sockaddr`), e.g. by `getsockname(2)`,
    /// `getpeername(2)`, `accept(2)` or `recvfrom(2)`.
    ///
    /// `len` is the address length the kernel reported. The family is taken
    /// from `storage.ss_family`:
    ///
    /// - `AF_INET` and `AF_INET6` need at least `sizeof(sockaddr_in)` or
    ///   `sizeof(sockaddr_in6)` bytes; the port, address, flow label and
    ///   scope id are kept (the flow label as the raw `sin6_flowinfo`, as
    ///   `std` does).
    /// - `AF_UNIX`: a length larger than `sizeof(sockaddr_un)` is cut down
    ///   to it (as C tsocket does). A length that ends right after the
    ///   family gives the unnamed address (the empty path); a `sun_path`
    ///   starting with NUL gives an abstract address whose name is the rest
    ///   of the `len` bytes; otherwise the path is the bytes up to the first
    ///   NUL, or up to `len` if there is none.
    ///
    /// # Errors
    ///
    /// - [`AddressErrorKind::InvalidSockaddr`] (`EINVAL`) if `len` is too
    ///   short for the family. A length of 0, which `recvfrom(2)` reports
    ///   for a datagram from an unbound unix socket, names no family and is
    ///   an error here; a caller that knows its socket is a unix socket can
    ///   use [`Address::unix_from_path("")`](Address::unix_from_path)
    ///   instead.
    /// - [`AddressErrorKind::UnsupportedFamily`] (`EAFNOSUPPORT`) for a
    ///   family other than `AF_INET`, `AF_INET6` and `AF_UNIX`.
    /// - [`AddressErrorKind::NameTooLong`] (`ENAMETOOLONG`) for a unix path
    ///   that fills all of `sun_path` without a terminating NUL (it could not
    ///   be given back to the kernel by [`to_sockaddr`](Address::to_sockaddr)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ipv4", Some("127.0.0.1"), 445)?;
    /// let (storage, len) = a.to_sockaddr();
    /// assert_eq!(Address::from_sockaddr_storage(&storage, len)?, a);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn from_sockaddr_storage(
        storage: &libc::sockaddr_storage,
        len: libc::socklen_t,
    ) -> Result<Address, AddressError> {
        let len = len as usize;
        if len < FAMILY_END {
            return Err(AddressError::new(
                AddressErrorKind::InvalidSockaddr,
                format!("length {len}"),
                format!("shorter than the {FAMILY_END} bytes that hold the address family"),
            ));
        }
        let family = i32::from(storage.ss_family);
        let too_short = |family: &str, structure: &str, need: usize| {
            AddressError::new(
                AddressErrorKind::InvalidSockaddr,
                format!("{family}, length {len}"),
                format!("shorter than {structure} ({need} bytes)"),
            )
        };
        match family {
            libc::AF_INET => {
                let need = mem::size_of::<libc::sockaddr_in>();
                if len < need {
                    return Err(too_short("AF_INET", "sockaddr_in", need));
                }
                let sin: &libc::sockaddr_in = storage_as(storage);
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                let port = u16::from_be(sin.sin_port);
                Ok(Address::from(SocketAddrV4::new(ip, port)))
            }
            libc::AF_INET6 => {
                let need = mem::size_of::<libc::sockaddr_in6>();
                if len < need {
                    return Err(too_short("AF_INET6", "sockaddr_in6", need));
                }
                let sin6: &libc::sockaddr_in6 = storage_as(storage);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Ok(Address::from(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            libc::AF_UNIX => {
                let sun: &libc::sockaddr_un = storage_as(storage);
                let path_len = len
                    .min(mem::size_of::<libc::sockaddr_un>())
                    .saturating_sub(SUN_PATH_OFFSET);
                // `c_char` is `i8` or `u8` depending on the target; the cast
                // keeps the bit pattern either way.
                let raw: Vec<u8> = sun.sun_path[..path_len].iter().map(|&c| c as u8).collect();
                Address::from_sun_path(&raw)
            }
            other => Err(AddressError::new(
                AddressErrorKind::UnsupportedFamily,
                format!("address family {other}"),
                "only AF_INET, AF_INET6 and AF_UNIX are supported",
            )),
        }
    }

    /// Reads a socket address from a raw pointer, as C code hands them out
    /// (`getifaddrs(3)`, `struct msghdr`, a callback from a C library).
    ///
    /// The first `len` bytes (at most `sizeof(sockaddr_storage)`) are
    /// copied, then read as by
    /// [`from_sockaddr_storage`](Address::from_sockaddr_storage). A null
    /// `addr` is an error ([`AddressErrorKind::InvalidSockaddr`]).
    ///
    /// # Errors
    ///
    /// As [`from_sockaddr_storage`](Address::from_sockaddr_storage).
    ///
    /// # Safety
    ///
    /// If `addr` is not null, it must be valid for reads of `len` bytes, or
    /// of `sizeof(sockaddr_storage)` bytes if `len` is larger. It need not
    /// be aligned.
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::unix_from_path("/tmp/s")?;
    /// let (storage, len) = a.to_sockaddr();
    /// let ptr = (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
    /// // SAFETY: `ptr` points to `storage`, which is `len` bytes or more.
    /// let b = unsafe { Address::from_raw_sockaddr(ptr, len) }?;
    /// assert_eq!(a, b);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub unsafe fn from_raw_sockaddr(
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    ) -> Result<Address, AddressError> {
        if addr.is_null() {
            return Err(AddressError::new(
                AddressErrorKind::InvalidSockaddr,
                format!("null pointer, length {len}"),
                "the sockaddr pointer is null",
            ));
        }
        let n = (len as usize).min(mem::size_of::<libc::sockaddr_storage>());
        let mut storage = zeroed_storage();
        // SAFETY: the caller guarantees `addr` is valid for `n` bytes of
        // reads (n <= len, and n <= sizeof(sockaddr_storage)); `storage` is
        // a local of `sizeof(sockaddr_storage)` bytes, so the write is in
        // bounds, and the two cannot overlap. Byte copies need no alignment.
        unsafe {
            ptr::copy_nonoverlapping(
                addr.cast::<u8>(),
                ptr::addr_of_mut!(storage).cast::<u8>(),
                n,
            );
        }
        Address::from_sockaddr_storage(&storage, n as libc::socklen_t)
    }

    /// Writes the address as a C socket address, for `bind(2)`,
    /// `connect(2)` or `sendto(2)` (`tsocket_address_bsd_sockaddr`).
    ///
    /// Returns the storage and the number of bytes of it that are the
    /// address; every other byte is zero. The length is
    /// `sizeof(sockaddr_in)` or `sizeof(sockaddr_in6)` for inet addresses.
    /// For unix addresses it is the offset of `sun_path` plus: the path
    /// length and one for its terminating NUL; one plus the name length for
    /// an abstract name; nothing for the unnamed address (the empty path).
    /// Note that binding the unnamed address makes Linux pick an abstract
    /// name (autobind); C tsocket never binds an empty path.
    ///
    /// The result always reads back to an equal address with
    /// [`from_sockaddr_storage`](Address::from_sockaddr_storage).
    ///
    /// # Examples
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ipv4", Some("10.0.0.1"), 0x1234)?;
    /// let (storage, len) = a.to_sockaddr();
    /// assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>());
    /// assert_eq!(storage.ss_family, libc::AF_INET as libc::sa_family_t);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    #[must_use]
    pub fn to_sockaddr(&self) -> (libc::sockaddr_storage, libc::socklen_t) {
        let mut storage = zeroed_storage();
        let len = match &self.repr {
            Repr::Inet(SocketAddr::V4(a)) => {
                let len = mem::size_of::<libc::sockaddr_in>();
                let sin: &mut libc::sockaddr_in = storage_as_mut(&mut storage);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                #[cfg(any(
                    target_os = "macos",
                    target_os = "ios",
                    target_os = "tvos",
                    target_os = "watchos",
                    target_os = "freebsd",
                    target_os = "openbsd",
                    target_os = "netbsd",
                    target_os = "dragonfly"
                ))]
                {
                    sin.sin_len = len as u8;
                }
                len
            }
            Repr::Inet(SocketAddr::V6(a)) => {
                let len = mem::size_of::<libc::sockaddr_in6>();
                let sin6: &mut libc::sockaddr_in6 = storage_as_mut(&mut storage);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                #[cfg(any(
                    target_os = "macos",
                    target_os = "ios",
                    target_os = "tvos",
                    target_os = "watchos",
                    target_os = "freebsd",
                    target_os = "openbsd",
                    target_os = "netbsd",
                    target_os = "dragonfly"
                ))]
                {
                    sin6.sin6_len = len as u8;
                }
                len
            }
            Repr::UnixPath(path) => {
                let bytes = path.as_os_str().as_bytes();
                let sun: &mut libc::sockaddr_un = storage_as_mut(&mut storage);
                sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
                // Invariant: bytes.len() <= UNIX_PATH_MAX < sun_path.len(),
                // so the zip copies all of it and leaves room for the NUL.
                for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
                    *dst = src as libc::c_char;
                }
                let len = if bytes.is_empty() {
                    SUN_PATH_OFFSET
                } else {
                    SUN_PATH_OFFSET + bytes.len() + 1
                };
                set_sun_len(sun, len);
                len
            }
            Repr::UnixAbstract(name) => {
                let sun: &mut libc::sockaddr_un = storage_as_mut(&mut storage);
                sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
                // sun_path[0] stays NUL; invariant: name.len() <= UNIX_PATH_MAX.
                for (dst, &src) in sun.sun_path[1..].iter_mut().zip(name) {
                    *dst = src as libc::c_char;
                }
                let len = SUN_PATH_OFFSET + 1 + name.len();
                set_sun_len(sun, len);
                len
            }
        };
        (storage, len as libc::socklen_t)
    }

    /// The address as a [`SocketAddr`], or `None` for a unix address.
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ip", Some("::1"), 53)?;
    /// assert_eq!(a.to_socket_addr(), Some("[::1]:53".parse().unwrap()));
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    #[must_use]
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match &self.repr {
            Repr::Inet(sa) => Some(*sa),
            Repr::UnixPath(_) | Repr::UnixAbstract(_) => None,
        }
    }

    /// Whether this is an inet address of `family`
    /// (`tsocket_address_is_inet`).
    ///
    /// `"ip"` matches IPv4 and IPv6, `"ipv4"` and `"ipv6"` match only their
    /// own family; ASCII case is ignored. Any other family name gives
    /// `false`.
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ip", Some("192.0.2.1"), 0)?;
    /// assert!(a.is_inet("ip") && a.is_inet("IPv4") && !a.is_inet("ipv6"));
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    #[must_use]
    pub fn is_inet(&self, family: &str) -> bool {
        match (&self.repr, Family::parse(family)) {
            (Repr::Inet(_), Some(Family::Any)) => true,
            (Repr::Inet(sa), Some(Family::V4)) => sa.is_ipv4(),
            (Repr::Inet(sa), Some(Family::V6)) => sa.is_ipv6(),
            (Repr::Inet(_), None) | (Repr::UnixPath(_) | Repr::UnixAbstract(_), _) => false,
        }
    }

    /// Whether this is an IPv4 address; the same as `is_inet("ipv4")`.
    #[must_use]
    pub fn is_ipv4(&self) -> bool {
        matches!(self.repr, Repr::Inet(SocketAddr::V4(_)))
    }

    /// Whether this is an IPv6 address; the same as `is_inet("ipv6")`.
    #[must_use]
    pub fn is_ipv6(&self) -> bool {
        matches!(self.repr, Repr::Inet(SocketAddr::V6(_)))
    }

    /// Whether this is a unix address: a path, the unnamed address or an
    /// abstract name (`tsocket_address_is_unix`).
    #[must_use]
    pub fn is_unix(&self) -> bool {
        matches!(self.repr, Repr::UnixPath(_) | Repr::UnixAbstract(_))
    }

    /// The IP address as text, without the port
    /// (`tsocket_address_inet_addr_string`), or `None` for a unix address.
    ///
    /// The text is what `inet_ntop(3)` prints, followed for IPv6 by `%` and
    /// the scope id when the scope id is not 0. It is accepted by
    /// [`inet_from_strings`](Address::inet_from_strings), so
    /// `inet_from_strings("ip", addr.inet_addr_string().as_deref(), port)`
    /// gives the same address with another port (and no flow label).
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let a = Address::inet_from_strings("ip", Some("fe80::1%1"), 445)?;
    /// assert_eq!(a.inet_addr_string().as_deref(), Some("fe80::1%1"));
    /// assert_eq!(Address::unix_from_path("/s")?.inet_addr_string(), None);
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    #[must_use]
    pub fn inet_addr_string(&self) -> Option<String> {
        match &self.repr {
            Repr::Inet(sa) => {
                let mut text = String::new();
                // Writing to a String cannot fail.
                write_ip(&mut text, sa).ok();
                Some(text)
            }
            Repr::UnixPath(_) | Repr::UnixAbstract(_) => None,
        }
    }

    /// The port of an inet address (`tsocket_address_inet_port`), or `None`
    /// for a unix address.
    #[must_use]
    pub fn inet_port(&self) -> Option<u16> {
        match &self.repr {
            Repr::Inet(sa) => Some(sa.port()),
            Repr::UnixPath(_) | Repr::UnixAbstract(_) => None,
        }
    }

    /// Changes the port of an inet address (`tsocket_address_inet_set_port`).
    ///
    /// # Errors
    ///
    /// [`AddressErrorKind::NotInet`] (`EINVAL`) for a unix address, which is
    /// left unchanged.
    ///
    /// ```
    /// use tsocket::Address;
    ///
    /// let mut a = Address::inet_from_strings("ipv4", None, 0)?;
    /// a.set_inet_port(445)?;
    /// assert_eq!(a.to_string(), "ipv4:0.0.0.0:445");
    /// assert!(Address::unix_from_path("/s")?.set_inet_port(1).is_err());
    /// # Ok::<(), tsocket::AddressError>(())
    /// ```
    pub fn set_inet_port(&mut self, port: u16) -> Result<(), AddressError> {
        match &mut self.repr {
            Repr::Inet(sa) => {
                sa.set_port(port);
                Ok(())
            }
            Repr::UnixPath(_) | Repr::UnixAbstract(_) => Err(AddressError::new(
                AddressErrorKind::NotInet,
                self.to_string(),
                "only an inet address has a port",
            )),
        }
    }

    /// The path of a unix address (`tsocket_address_unix_path`): empty for
    /// the unnamed address, `None` for an inet address or an abstract name.
    #[must_use]
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.repr {
            Repr::UnixPath(path) => Some(path),
            Repr::Inet(_) | Repr::UnixAbstract(_) => None,
        }
    }

    /// The name of an abstract unix address (without the leading NUL of
    /// `sun_path`), or `None` for any other address. See
    /// [`unix_abstract`](Address::unix_abstract).
    #[must_use]
    pub fn unix_abstract_name(&self) -> Option<&[u8]> {
        match &self.repr {
            Repr::UnixAbstract(name) => Some(name),
            Repr::Inet(_) | Repr::UnixPath(_) => None,
        }
    }

    /// Builds a unix address from the first `len - offset` bytes of a
    /// kernel-filled `sun_path`.
    fn from_sun_path(raw: &[u8]) -> Result<Address, AddressError> {
        match raw.split_first() {
            None => Ok(Address {
                repr: Repr::UnixPath(PathBuf::new()),
            }),
            // Abstract names are length-delimited and may contain NULs.
            Some((0, name)) => Address::unix_abstract(name),
            Some(_) => {
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                Address::unix_from_path(Path::new(std::ffi::OsStr::from_bytes(&raw[..end])))
            }
        }
    }

    /// Writes the string form (see `Display`) to `out`.
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match &self.repr {
            Repr::Inet(sa) => {
                out.write_str(if sa.is_ipv4() { "ipv4:" } else { "ipv6:" })?;
                write_ip(out, sa)?;
                write!(out, ":{}", sa.port())
            }
            Repr::UnixPath(path) => write!(out, "unix:{}", path.display()),
            Repr::UnixAbstract(name) => {
                out.write_str("unix:@")?;
                write_escaped(out, name)
            }
        }
    }
}

/// Prints tsocket's string form (`tsocket_address_string`):
/// `ipv4:ADDR:PORT`, `ipv6:ADDR:PORT` (no brackets), `unix:PATH`, and
/// `unix:@NAME` for an abstract name. Width, fill and alignment flags
/// apply to the whole string.
///
/// ```
/// use tsocket::Address;
///
/// let v4 = Address::inet_from_strings("ipv4", Some("1.2.3.4"), 445)?;
/// assert_eq!(v4.to_string(), "ipv4:1.2.3.4:445");
/// let v6 = Address::inet_from_strings("ipv6", None, 1234)?;
/// assert_eq!(v6.to_string(), "ipv6::::1234");
/// let unix = Address::unix_from_path("/tmp/sock")?;
/// assert_eq!(format!("[{unix:>12}]"), "[unix:/tmp/sock]");
/// assert_eq!(format!("[{unix:>16}]"), "[  unix:/tmp/sock]");
/// # Ok::<(), tsocket::AddressError>(())
/// ```
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.width().is_none() && f.precision().is_none() {
            self.write_to(f)
        } else {
            let mut text = String::new();
            self.write_to(&mut text)?;
            f.pad(&text)
        }
    }
}

/// Shows the string form, and the IPv6 flow label when it is not 0 (the
/// string form does not carry it): `Address(ipv4:1.2.3.4:445)`.
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = f.debug_tuple("Address");
        t.field(&format_args!("{self}"));
        if let Repr::Inet(SocketAddr::V6(a)) = &self.repr {
            if a.flowinfo() != 0 {
                t.field(&format_args!("flowinfo={:#x}", a.flowinfo()));
            }
        }
        t.finish()
    }
}

/// Parses the string form that `Display` prints.
///
/// Accepted forms (the prefix is matched ignoring ASCII case):
///
/// - `ipv4:ADDR:PORT`, ADDR in dotted-quad form;
/// - `ipv6:ADDR:PORT`, where the port follows the *last* colon, so
///   `ipv6::::1234` is `::` port 1234; ADDR may carry a `%SCOPE`;
/// - `ipv6:[ADDR]:PORT`;
/// - `unix:PATH` (`unix:` alone is the unnamed address);
/// - `unix:@NAME`, an abstract name, where `\xNN` stands for the byte NN
///   and a `\` must start such an escape.
///
/// A port is required for inet addresses and is one or more decimal digits
/// with a value of at most 65535. tsocket's C documentation says its string
/// form is not meant for parsing; this crate parses it anyway, and
/// `s.parse::<Address>()` of `addr.to_string()` gives back `addr`, with the
/// exceptions listed in the documentation of [`Address`].
///
/// # Errors
///
/// [`AddressErrorKind::UnsupportedFamily`] for an unknown prefix,
/// [`AddressErrorKind::Malformed`] for a string without a prefix or an
/// inet address without a port, and the errors of the constructors
/// ([`Address::inet_from_strings`], [`Address::unix_from_path`],
/// [`Address::unix_abstract`]).
///
/// ```
/// use tsocket::Address;
///
/// let a: Address = "ipv6:[2001:db8::1]:445".parse()?;
/// assert_eq!(a.to_string(), "ipv6:2001:db8::1:445");
/// assert_eq!(a.to_string().parse::<Address>()?, a);
/// assert!("ipv4:1.2.3.4".parse::<Address>().is_err());
/// # Ok::<(), tsocket::AddressError>(())
/// ```
impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        let malformed = |reason: &str| AddressError::new(AddressErrorKind::Malformed, s, reason);
        let Some((prefix, rest)) = s.split_once(':') else {
            return Err(malformed(
                "expected \"ipv4:ADDR:PORT\", \"ipv6:ADDR:PORT\" or \"unix:PATH\"",
            ));
        };
        if prefix.eq_ignore_ascii_case("unix") {
            return match rest.strip_prefix('@') {
                Some(escaped) => {
                    let name = unescape(escaped).map_err(|reason| {
                        AddressError::new(AddressErrorKind::Malformed, s, reason)
                    })?;
                    Address::unix_abstract(name)
                }
                None => Address::unix_from_path(rest),
            };
        }
        let family = if prefix.eq_ignore_ascii_case("ipv4") {
            Family::V4
        } else if prefix.eq_ignore_ascii_case("ipv6") {
            Family::V6
        } else {
            return Err(AddressError::new(
                AddressErrorKind::UnsupportedFamily,
                s,
                format!("the prefix {prefix:?} is not \"ipv4\", \"ipv6\" or \"unix\""),
            ));
        };
        let (host, port_text) = match rest.strip_prefix('[') {
            Some(bracketed) if family == Family::V6 => {
                let Some((host, after)) = bracketed.split_once(']') else {
                    return Err(malformed("\"[\" without a matching \"]\""));
                };
                let Some(port_text) = after.strip_prefix(':') else {
                    return Err(malformed("\"]\" must be followed by \":PORT\""));
                };
                (host, port_text)
            }
            _ => match rest.rsplit_once(':') {
                Some(split) => split,
                None => return Err(malformed("missing \":PORT\" after the address")),
            },
        };
        let port = parse_port(port_text)
            .map_err(|reason| AddressError::new(AddressErrorKind::InvalidPort, s, reason))?;
        parse_inet(family, host, port).map(Address::from)
    }
}

impl From<SocketAddr> for Address {
    /// Wraps a `std` socket address; IPv6 flow label and scope id are kept.
    fn from(sa: SocketAddr) -> Address {
        Address {
            repr: Repr::Inet(sa),
        }
    }
}

impl From<SocketAddrV4> for Address {
    /// Wraps a `std` IPv4 socket address.
    fn from(sa: SocketAddrV4) -> Address {
        Address::from(SocketAddr::V4(sa))
    }
}

impl From<SocketAddrV6> for Address {
    /// Wraps a `std` IPv6 socket address; flow label and scope id are kept.
    fn from(sa: SocketAddrV6) -> Address {
        Address::from(SocketAddr::V6(sa))
    }
}

impl TryFrom<&Address> for SocketAddr {
    type Error = AddressError;

    /// The inet address as a `std` socket address.
    ///
    /// # Errors
    ///
    /// [`AddressErrorKind::NotInet`] (`EINVAL`) for a unix address.
    fn try_from(addr: &Address) -> Result<SocketAddr, AddressError> {
        addr.to_socket_addr().ok_or_else(|| {
            AddressError::new(
                AddressErrorKind::NotInet,
                addr.to_string(),
                "a unix address has no SocketAddr form",
            )
        })
    }
}

/// What kind of input an [`AddressError`] rejected.
///
/// Each kind has one errno ([`AddressErrorKind::errno`]), the one tsocket
/// sets for the same failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressErrorKind {
    /// The family name is not `"ip"`, `"ipv4"` or `"ipv6"` (or, in a string
    /// form, `ipv4`, `ipv6` or `unix`), or a sockaddr's family is not
    /// `AF_INET`, `AF_INET6` or `AF_UNIX` (`EAFNOSUPPORT`).
    UnsupportedFamily,
    /// The text is not a numeric address of the requested family, or its
    /// IPv6 scope is not a known interface (`EINVAL`).
    InvalidAddress,
    /// The port is not one or more decimal digits, or is above 65535
    /// (`EINVAL`).
    InvalidPort,
    /// The string does not have the expected shape: no family prefix, no
    /// `:PORT`, unbalanced brackets, text around `[ADDR]`, a bad `\xNN`
    /// escape (`EINVAL`).
    Malformed,
    /// A unix path or abstract name does not fit in `sun_path`
    /// (`ENAMETOOLONG`).
    NameTooLong,
    /// A unix path contains a NUL byte (`EINVAL`).
    InvalidPath,
    /// The operation needs an inet address and was given a unix address
    /// (`EINVAL`).
    NotInet,
    /// A sockaddr's length is too short for its family, or its pointer is
    /// null (`EINVAL`).
    InvalidSockaddr,
}

impl AddressErrorKind {
    /// The errno that tsocket sets for this kind of failure: `EAFNOSUPPORT`,
    /// `ENAMETOOLONG` or `EINVAL`.
    #[must_use]
    pub fn errno(self) -> i32 {
        match self {
            AddressErrorKind::UnsupportedFamily => libc::EAFNOSUPPORT,
            AddressErrorKind::NameTooLong => libc::ENAMETOOLONG,
            AddressErrorKind::InvalidAddress
            | AddressErrorKind::InvalidPort
            | AddressErrorKind::Malformed
            | AddressErrorKind::InvalidPath
            | AddressErrorKind::NotInet
            | AddressErrorKind::InvalidSockaddr => libc::EINVAL,
        }
    }

    /// A few words naming what was rejected, used by `AddressError`'s
    /// `Display`.
    fn summary(self) -> &'static str {
        match self {
            AddressErrorKind::UnsupportedFamily => "unsupported address family",
            AddressErrorKind::InvalidAddress => "invalid inet address",
            AddressErrorKind::InvalidPort => "invalid port in",
            AddressErrorKind::Malformed => "malformed address",
            AddressErrorKind::NameTooLong => "unix socket name too long",
            AddressErrorKind::InvalidPath => "invalid unix socket path",
            AddressErrorKind::NotInet => "not an inet address",
            AddressErrorKind::InvalidSockaddr => "invalid sockaddr",
        }
    }
}

/// An address was rejected: which input, and why.
///
/// `Display` gives a one-line message naming the input and the reason, for
/// example `invalid inet address "example.com": not a numeric IPv4 address
/// (dotted quad); host names are not resolved`. Inputs longer than 200
/// characters are cut short in the message; [`AddressError::input`] keeps
/// all of it.
///
/// ```
/// use tsocket::{Address, AddressErrorKind};
///
/// let err = Address::inet_from_hostport_strings("ip", Some("[::1]:70000"), 0).unwrap_err();
/// assert_eq!(err.kind(), AddressErrorKind::InvalidPort);
/// assert_eq!(err.errno(), libc::EINVAL);
/// assert_eq!(err.to_string(), r#"invalid port in "[::1]:70000": "70000" is larger than 65535"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    kind: AddressErrorKind,
    input: String,
    reason: String,
}

impl AddressError {
    fn new(kind: AddressErrorKind, input: impl Into<String>, reason: impl Into<String>) -> Self {
        AddressError {
            kind,
            input: input.into(),
            reason: reason.into(),
        }
    }

    /// What kind of input was rejected.
    #[must_use]
    pub fn kind(&self) -> AddressErrorKind {
        self.kind
    }

    /// The errno that tsocket sets for the same failure: `EAFNOSUPPORT`,
    /// `ENAMETOOLONG` or `EINVAL` (see [`AddressErrorKind::errno`]).
    #[must_use]
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// The rejected input, or the part of it at fault (for a sockaddr, a
    /// description such as `AF_INET, length 8`). Unix paths that are not
    /// UTF-8 are shown lossily.
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.summary())?;
        f.write_str(" ")?;
        if self.input.chars().nth(MAX_SHOWN_INPUT).is_some() {
            let shown: String = self.input.chars().take(MAX_SHOWN_INPUT).collect();
            write!(f, "{shown:?}...")?;
        } else {
            write!(f, "{:?}", self.input)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl Error for AddressError {}

impl From<AddressError> for io::Error {
    /// An `io::Error` of kind `Unsupported` (for `EAFNOSUPPORT`) or
    /// `InvalidInput` (all other kinds) that carries the `AddressError`
    /// (reach it with `io::Error::get_ref` and `downcast_ref`).
    fn from(err: AddressError) -> io::Error {
        let kind = match err.kind {
            AddressErrorKind::UnsupportedFamily => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, err)
    }
}

/// Parses a numeric IP address (with an optional IPv6 `%scope`) of
/// `family` into a socket address with `port`.
fn parse_inet(family: Family, text: &str, port: u16) -> Result<SocketAddr, AddressError> {
    let invalid =
        |reason: String| AddressError::new(AddressErrorKind::InvalidAddress, text, reason);
    if text.is_empty() {
        return Err(invalid("the address is empty".into()));
    }
    let (host, scope) = match text.split_once('%') {
        Some((host, scope)) => (host, Some(scope)),
        None => (text, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        if scope.is_some() {
            return Err(invalid(
                "a scope (\"%...\") is only allowed on an IPv6 address".into(),
            ));
        }
        if family == Family::V6 {
            return Err(invalid(
                "this is an IPv4 address, but the family is \"ipv6\"".into(),
            ));
        }
        return Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)));
    }
    if let Ok(ip) = host.parse::<Ipv6Addr>() {
        if family == Family::V4 {
            return Err(invalid(
                "this is an IPv6 address, but the family is \"ipv4\"".into(),
            ));
        }
        let scope_id = match scope {
            None => 0,
            Some(scope) => parse_scope(scope).map_err(invalid)?,
        };
        return Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)));
    }
    let what = match family {
        Family::V4 => "not a numeric IPv4 address (dotted quad)",
        Family::V6 => "not a numeric IPv6 address",
        Family::Any => "not a numeric IPv4 (dotted quad) or IPv6 address",
    };
    Err(invalid(format!("{what}; host names are not resolved")))
}

/// Parses the text after `%` in an IPv6 address: an interface index, or an
/// interface name looked up with `if_nametoindex(3)`.
fn parse_scope(scope: &str) -> Result<u32, String> {
    if scope.is_empty() {
        return Err("the scope after \"%\" is empty".into());
    }
    if scope.bytes().all(|b| b.is_ascii_digit()) {
        return scope
            .parse::<u32>()
            .map_err(|_| format!("the scope id {scope} is larger than {}", u32::MAX));
    }
    if scope.len() >= libc::IF_NAMESIZE {
        return Err(format!(
            "the scope {scope:?} is longer than an interface name can be"
        ));
    }
    let name =
        CString::new(scope).map_err(|_| format!("the scope {scope:?} contains a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated C string that outlives the
    // call; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no network interface is named {scope:?}"));
    }
    Ok(index)
}

/// Parses a port: one or more ASCII decimal digits, value at most 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("the port is empty".into());
    }
    let mut value: u32 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return Err(format!("{text:?} is not a decimal port number"));
        }
        value = value * 10 + u32::from(b - b'0');
        if value > u32::from(u16::MAX) {
            return Err(format!("{text:?} is larger than 65535"));
        }
    }
    // The loop above keeps value <= 65535.
    Ok(value as u16)
}

/// Splits a `host[:port]` string as `inet_from_hostport_strings` documents.
fn split_host_port(text: &str, default_port: u16) -> Result<(&str, u16), AddressError> {
    let port_of = |port_text: &str| {
        parse_port(port_text)
            .map_err(|reason| AddressError::new(AddressErrorKind::InvalidPort, text, reason))
    };
    if let (Some(open), Some(close)) = (text.find('['), text.rfind(']')) {
        if close > open {
            if open != 0 {
                return Err(AddressError::new(
                    AddressErrorKind::Malformed,
                    text,
                    "text before \"[\"",
                ));
            }
            let host = &text[open + 1..close];
            let after = &text[close + 1..];
            if after.is_empty() {
                return Ok((host, default_port));
            }
            let Some(port_text) = after.strip_prefix(':') else {
                return Err(AddressError::new(
                    AddressErrorKind::Malformed,
                    text,
                    "only \":PORT\" may follow \"]\"",
                ));
            };
            return Ok((host, port_of(port_text)?));
        }
    }
    if text.contains('.') {
        if let Some((host, port_text)) = text.rsplit_once(':') {
            return Ok((host, port_of(port_text)?));
        }
    }
    Ok((text, default_port))
}

/// Writes an IP address as `inet_ntop(3)` does, plus `%scope` for an IPv6
/// address with a non-zero scope id.
fn write_ip(out: &mut impl fmt::Write, sa: &SocketAddr) -> fmt::Result {
    match sa {
        SocketAddr::V4(a) => write!(out, "{}", a.ip()),
        SocketAddr::V6(a) => {
            write_ipv6(out, a.ip())?;
            if a.scope_id() != 0 {
                write!(out, "%{}", a.scope_id())?;
            }
            Ok(())
        }
    }
}

/// Writes an IPv6 address the way glibc's `inet_ntop(3)` does: lowercase
/// hex without leading zeros; the longest run of two or more zero groups
/// (the first such run on a tie) written as `::`; and the last 32 bits in
/// dotted-quad form when the address starts with that run and the run is
/// six groups long (`::1.2.3.4`) or five groups followed by `ffff`
/// (`::ffff:1.2.3.4`).
fn write_ipv6(out: &mut impl fmt::Write, ip: &Ipv6Addr) -> fmt::Result {
    let groups = ip.segments();
    // Find the longest run of zero groups.
    let (mut best_start, mut best_len) = (0usize, 0usize);
    let mut i = 0;
    while i < groups.len() {
        if groups[i] == 0 {
            let start = i;
            while i < groups.len() && groups[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_start = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    let compress = best_len >= 2;
    let embedded_v4 =
        compress && best_start == 0 && (best_len == 6 || (best_len == 5 && groups[5] == 0xffff));
    let mut i = 0;
    while i < groups.len() {
        if compress && i == best_start {
            out.write_str("::")?;
            i += best_len;
            continue;
        }
        if i != 0 && !(compress && i == best_start + best_len) {
            out.write_char(':')?;
        }
        if embedded_v4 && i == 6 {
            let o = ip.octets();
            return write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
        }
        write!(out, "{:x}", groups[i])?;
        i += 1;
    }
    Ok(())
}

/// Writes an abstract name: printable ASCII other than `\` as itself, every
/// other byte as `\xNN`.
fn write_escaped(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if (0x20..=0x7e).contains(&b) && b != b'\\' {
            out.write_char(char::from(b))?;
        } else {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// Reverses `write_escaped`: `\xNN` is the byte NN, any other character
/// stands for its UTF-8 bytes, and a `\` must start a `\xNN` escape.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes.get(i + 1..i + 4) {
            Some(&[b'x', hi, lo]) => match (hex(hi), hex(lo)) {
                (Some(hi), Some(lo)) => {
                    // hi, lo < 16, so the byte fits.
                    out.push((hi * 16 + lo) as u8);
                    i += 4;
                }
                _ => return Err(format!("bad escape at byte {i}: expected \"\\xNN\"")),
            },
            _ => return Err(format!("bad escape at byte {i}: expected \"\\xNN\"")),
        }
    }
    Ok(out)
}

/// Sets `sun_len` on the systems whose `sockaddr_un` has one.
#[allow(unused_variables)]
fn set_sun_len(sun: &mut libc::sockaddr_un, len: usize) {
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))]
    {
        sun.sun_len = len as u8;
    }
}

/// The C socket address structs that can be viewed inside a
/// `sockaddr_storage`.
///
/// # Safety
///
/// Implementors must be plain-old-data C structs (every bit pattern is a
/// valid value, no padding-sensitive invariants) that are no larger and no
/// more strictly aligned than `sockaddr_storage`.
unsafe trait SockaddrType: Sized {}

// SAFETY: plain C structs of integers and byte arrays; POSIX requires
// sockaddr_storage to be large and aligned enough for every sockaddr type.
unsafe impl SockaddrType for libc::sockaddr_in {}
// SAFETY: as above.
unsafe impl SockaddrType for libc::sockaddr_in6 {}
// SAFETY: as above.
unsafe impl SockaddrType for libc::sockaddr_un {}

/// An all-zero `sockaddr_storage`.
fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers and byte
    // arrays, for which all-zero bytes are a valid value.
    unsafe { mem::zeroed() }
}

/// Views `storage` as the sockaddr type `T`.
fn storage_as<T: SockaddrType>(storage: &libc::sockaddr_storage) -> &T {
    const {
        assert!(mem::size_of::<T>() <= mem::size_of::<libc::sockaddr_storage>());
        assert!(mem::align_of::<T>() <= mem::align_of::<libc::sockaddr_storage>());
    }
    // SAFETY: `T: SockaddrType` is POD, fits in `storage` and needs no more
    // alignment than it (checked above at compile time), so the cast
    // reference is in bounds, aligned and points to a valid `T`; it borrows
    // `storage`, so it cannot outlive it.
    unsafe { &*ptr::from_ref(storage).cast::<T>() }
}

/// Views `storage` mutably as the sockaddr type `T`.
fn storage_as_mut<T: SockaddrType>(storage: &mut libc::sockaddr_storage) -> &mut T {
    const {
        assert!(mem::size_of::<T>() <= mem::size_of::<libc::sockaddr_storage>());
        assert!(mem::align_of::<T>() <= mem::align_of::<libc::sockaddr_storage>());
    }
    // SAFETY: as in `storage_as`; in addition any value written through the
    // `&mut T` leaves `storage` a valid (POD) sockaddr_storage, and the
    // exclusive borrow of `storage` makes the `&mut T` unique.
    unsafe { &mut *ptr::from_mut(storage).cast::<T>() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::net::IpAddr;
    use std::os::fd::AsRawFd;

    fn v4(text: &str, port: u16) -> Address {
        Address::inet_from_strings("ipv4", Some(text), port).unwrap()
    }

    fn v6(text: &str, port: u16) -> Address {
        Address::inet_from_strings("ipv6", Some(text), port).unwrap()
    }

    fn err_kind<T: fmt::Debug>(r: Result<T, AddressError>) -> AddressErrorKind {
        r.unwrap_err().kind()
    }

    /// Checks the general error contract: a kind, a matching errno, a
    /// non-empty message that starts with the kind's summary.
    fn check_error(err: &AddressError) {
        let msg = err.to_string();
        assert!(!msg.is_empty());
        assert!(msg.starts_with(err.kind().summary()), "{msg}");
        assert!(msg.len() > err.kind().summary().len() + 4, "{msg}");
        assert!(
            [libc::EINVAL, libc::EAFNOSUPPORT, libc::ENAMETOOLONG].contains(&err.errno()),
            "{msg}"
        );
    }

    /// The index of the loopback interface, or `None` if there is none.
    fn loopback_index() -> Option<(String, u32)> {
        for name in ["lo", "lo0"] {
            let c = CString::new(name).unwrap();
            // SAFETY: `c` is a valid C string for the duration of the call.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if index != 0 {
                return Some((name.to_string(), index));
            }
        }
        None
    }

    extern "C" {
        // Not bound by the `libc` crate; POSIX, in every libc.
        fn inet_pton(
            af: libc::c_int,
            src: *const libc::c_char,
            dst: *mut libc::c_void,
        ) -> libc::c_int;
        fn inet_ntop(
            af: libc::c_int,
            src: *const libc::c_void,
            dst: *mut libc::c_char,
            size: libc::socklen_t,
        ) -> *const libc::c_char;
    }

    /// What the C library's `inet_pton` makes of `text` for `family`.
    fn pton(family: libc::c_int, text: &str) -> Option<IpAddr> {
        let c = CString::new(text).ok()?;
        let mut buf = [0u8; 16];
        // SAFETY: `c` is a valid C string; `buf` has room for an in6_addr
        // (16 bytes), the larger of the two results.
        let rc = unsafe { inet_pton(family, c.as_ptr(), buf.as_mut_ptr().cast()) };
        match (rc, family) {
            (1, libc::AF_INET) => Some(IpAddr::from([buf[0], buf[1], buf[2], buf[3]])),
            (1, _) => Some(IpAddr::from(buf)),
            _ => None,
        }
    }

    /// What the C library's `inet_ntop` prints for `ip`.
    fn ntop(ip: IpAddr) -> String {
        let mut buf = [0 as libc::c_char; 64];
        let (family, src): (i32, Vec<u8>) = match ip {
            IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
        };
        // SAFETY: `src` holds an in_addr or in6_addr (4 or 16 bytes) as
        // `family` says; `buf` is writable for its full length, given as the
        // size.
        let p = unsafe {
            inet_ntop(
                family,
                src.as_ptr().cast(),
                buf.as_mut_ptr(),
                buf.len() as libc::socklen_t,
            )
        };
        assert!(!p.is_null());
        // SAFETY: inet_ntop succeeded, so `buf` holds a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    // ---- inet_from_strings ----

    #[test]
    fn inet_from_strings_families() {
        let a = Address::inet_from_strings("ipv4", Some("1.2.3.4"), 445).unwrap();
        assert!(a.is_ipv4() && a.is_inet("ip") && a.is_inet("ipv4") && !a.is_inet("ipv6"));
        assert_eq!(a.to_socket_addr(), Some("1.2.3.4:445".parse().unwrap()));

        let b = Address::inet_from_strings("ipv6", Some("2001:db8::1"), 445).unwrap();
        assert!(b.is_ipv6() && b.is_inet("ip") && b.is_inet("ipv6") && !b.is_inet("ipv4"));

        // "ip" takes whichever family the text is.
        assert!(Address::inet_from_strings("ip", Some("10.1.1.1"), 1)
            .unwrap()
            .is_ipv4());
        assert!(Address::inet_from_strings("ip", Some("::1"), 1)
            .unwrap()
            .is_ipv6());

        // Family names ignore ASCII case.
        for fam in ["IP", "Ipv4", "IPV4", "iPv6"] {
            assert!(Address::inet_from_strings(fam, None, 0).is_ok(), "{fam}");
        }
    }

    #[test]
    fn inet_from_strings_defaults() {
        let a = Address::inet_from_strings("ipv4", None, 7).unwrap();
        assert_eq!(a.to_string(), "ipv4:0.0.0.0:7");
        let b = Address::inet_from_strings("ipv6", None, 7).unwrap();
        assert_eq!(b.to_string(), "ipv6::::7");
        let c = Address::inet_from_strings("ip", None, 7).unwrap();
        assert_eq!(c, b);
    }

    #[test]
    fn inet_from_strings_errors() {
        let err = Address::inet_from_strings("ipx", Some("1.2.3.4"), 1).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::UnsupportedFamily);
        assert_eq!(err.errno(), libc::EAFNOSUPPORT);
        assert!(err.to_string().contains("\"ipx\""), "{err}");
        check_error(&err);
        // Family is checked even when the address is missing.
        assert_eq!(
            err_kind(Address::inet_from_strings("", None, 1)),
            AddressErrorKind::UnsupportedFamily
        );
        assert_eq!(
            err_kind(Address::inet_from_strings("unix", None, 1)),
            AddressErrorKind::UnsupportedFamily
        );

        for (fam, text) in [
            ("ip", "localhost"),
            ("ip", "example.com"),
            ("ipv4", ""),
            ("ip", " 1.2.3.4"),
            ("ipv4", "1.2.3.4 "),
            ("ipv4", "1.2.3"),
            ("ipv4", "127.1"),
            ("ipv4", "0x7f.0.0.1"),
            ("ipv4", "010.0.0.1"),
            ("ipv4", "2130706433"),
            ("ipv4", "256.0.0.1"),
            ("ipv6", "1.2.3.4"),
            ("ipv4", "::1"),
            ("ipv6", "[::1]"),
            ("ipv6", "::1:"),
            ("ipv6", "1:2:3:4:5:6:7:8:9"),
            ("ipv6", "fe80::1%"),
            ("ipv6", "fe80::1%99999999999"),
            ("ipv6", "fe80::1%no-such-interface0"),
            ("ipv6", "fe80::1%a\0b"),
            ("ip", "1.2.3.4%1"),
            ("ip", "1.2.3.4:80"),
        ] {
            let err = Address::inet_from_strings(fam, Some(text), 1).unwrap_err();
            assert_eq!(
                err.kind(),
                AddressErrorKind::InvalidAddress,
                "{fam} {text:?}"
            );
            assert_eq!(err.errno(), libc::EINVAL);
            check_error(&err);
        }
        let err = Address::inet_from_strings("ipv6", Some("1.2.3.4"), 1).unwrap_err();
        assert!(err.to_string().contains("IPv4 address"), "{err}");
        let err = Address::inet_from_strings("ipv4", Some("example.com"), 1).unwrap_err();
        assert!(err.to_string().contains("not resolved"), "{err}");
    }

    #[test]
    fn inet_from_strings_scope() {
        let a = v6("fe80::1%3", 445);
        assert_eq!(a.to_string(), "ipv6:fe80::1%3:445");
        assert_eq!(a.inet_addr_string().as_deref(), Some("fe80::1%3"));
        match a.to_socket_addr() {
            Some(SocketAddr::V6(sa)) => assert_eq!(sa.scope_id(), 3),
            other => panic!("{other:?}"),
        }
        // Scope 0 is no scope.
        assert_eq!(v6("fe80::1%0", 1), v6("fe80::1", 1));
        if let Some((name, index)) = loopback_index() {
            let b = v6(&format!("fe80::1%{name}"), 1);
            assert_eq!(b, v6(&format!("fe80::1%{index}"), 1));
        }
    }

    #[test]
    fn inet_addr_string_feeds_inet_from_strings() {
        for a in [v4("192.0.2.1", 1), v6("2001:db8::2", 1), v6("fe80::2%7", 1)] {
            let b = Address::inet_from_strings("ip", a.inet_addr_string().as_deref(), 99).unwrap();
            let mut expected = a.clone();
            expected.set_inet_port(99).unwrap();
            assert_eq!(b, expected);
        }
    }

    // ---- inet_from_hostport_strings ----

    #[test]
    fn hostport_shapes() {
        let hp = |fam, text, port| Address::inet_from_hostport_strings(fam, text, port);
        assert_eq!(hp("ip", Some("[::1]:445"), 1).unwrap(), v6("::1", 445));
        assert_eq!(hp("ip", Some("[::1]"), 1).unwrap(), v6("::1", 1));
        assert_eq!(
            hp("ipv6", Some("[fe80::1%2]:80"), 1).unwrap(),
            v6("fe80::1%2", 80)
        );
        assert_eq!(hp("ip", Some("1.2.3.4:80"), 1).unwrap(), v4("1.2.3.4", 80));
        assert_eq!(hp("ip", Some("1.2.3.4"), 1).unwrap(), v4("1.2.3.4", 1));
        assert_eq!(hp("ip", Some("1.2.3.4:080"), 1).unwrap(), v4("1.2.3.4", 80));
        assert_eq!(hp("ip", Some("1.2.3.4:0"), 1).unwrap(), v4("1.2.3.4", 0));
        assert_eq!(
            hp("ip", Some("1.2.3.4:65535"), 1).unwrap(),
            v4("1.2.3.4", 65535)
        );
        assert_eq!(hp("ip", Some("::1"), 5).unwrap(), v6("::1", 5));
        assert_eq!(
            hp("ip", Some("2001:db8::1"), 5).unwrap(),
            v6("2001:db8::1", 5)
        );
        // Brackets around an IPv4 address are allowed, as in tsocket.
        assert_eq!(hp("ip", Some("[1.2.3.4]:9"), 1).unwrap(), v4("1.2.3.4", 9));
        // None: the unspecified address with the default port.
        assert_eq!(hp("ipv4", None, 5).unwrap().to_string(), "ipv4:0.0.0.0:5");
        assert_eq!(hp("ip", None, 5).unwrap().to_string(), "ipv6::::5");
    }

    #[test]
    fn hostport_errors() {
        let hp = |fam, text| Address::inet_from_hostport_strings(fam, Some(text), 1);
        for (fam, text, kind) in [
            ("ip", "[::1]x", AddressErrorKind::Malformed),
            ("ip", "[::1]x:80", AddressErrorKind::Malformed),
            ("ip", "x[::1]:80", AddressErrorKind::Malformed),
            ("ip", "[::1]:", AddressErrorKind::InvalidPort),
            ("ip", "[::1]:65536", AddressErrorKind::InvalidPort),
            ("ip", "[::1]:-1", AddressErrorKind::InvalidPort),
            ("ip", "[::1]:+80", AddressErrorKind::InvalidPort),
            ("ip", "[::1]: 80", AddressErrorKind::InvalidPort),
            (
                "ip",
                "[::1]:99999999999999999999999999",
                AddressErrorKind::InvalidPort,
            ),
            ("ip", "1.2.3.4:", AddressErrorKind::InvalidPort),
            ("ip", "1.2.3.4:abc", AddressErrorKind::InvalidPort),
            ("ip", "1.2.3.4:70000", AddressErrorKind::InvalidPort),
            // An embedded IPv4 part needs brackets, as in tsocket.
            ("ip", "::ffff:1.2.3.4", AddressErrorKind::InvalidPort),
            ("ip", "[::1", AddressErrorKind::InvalidAddress),
            ("ip", "::1]", AddressErrorKind::InvalidAddress),
            ("ip", "][", AddressErrorKind::InvalidAddress),
            ("ip", "[]:80", AddressErrorKind::InvalidAddress),
            ("ip", "", AddressErrorKind::InvalidAddress),
            (
                "ip",
                "host.example.com:80",
                AddressErrorKind::InvalidAddress,
            ),
            ("ipv6", "1.2.3.4:80", AddressErrorKind::InvalidAddress),
            ("ipv4", "[::1]:80", AddressErrorKind::InvalidAddress),
            ("ipx", "1.2.3.4:80", AddressErrorKind::UnsupportedFamily),
        ] {
            let err = hp(fam, text).unwrap_err();
            assert_eq!(err.kind(), kind, "{fam} {text:?}: {err}");
            check_error(&err);
        }
        assert_eq!(
            hp("ip", "[::1]:65536").unwrap_err().to_string(),
            r#"invalid port in "[::1]:65536": "65536" is larger than 65535"#
        );
        assert_eq!(
            hp("ip", "[::1]zz").unwrap_err().to_string(),
            r#"malformed address "[::1]zz": only ":PORT" may follow "]""#
        );
        assert_eq!(
            Address::inet_from_hostport_strings("ipx", Some("[::1]:65536"), 1)
                .unwrap_err()
                .kind(),
            AddressErrorKind::InvalidPort,
            "the host:port text is checked before the family, as in tsocket"
        );
    }

    // ---- unix ----

    #[test]
    fn unix_from_path_accepts() {
        let a = Address::unix_from_path("/tmp/sock").unwrap();
        assert!(a.is_unix() && !a.is_inet("ip") && !a.is_ipv4() && !a.is_ipv6());
        assert_eq!(a.unix_path(), Some(Path::new("/tmp/sock")));
        assert_eq!(a.inet_port(), None);
        assert_eq!(a.inet_addr_string(), None);
        assert_eq!(a.to_socket_addr(), None);
        assert_eq!(a.unix_abstract_name(), None);
        // &str, String, &Path, PathBuf all work.
        assert_eq!(
            Address::unix_from_path(String::from("/tmp/sock")).unwrap(),
            a
        );
        assert_eq!(Address::unix_from_path(Path::new("/tmp/sock")).unwrap(), a);
        assert_eq!(
            Address::unix_from_path(PathBuf::from("/tmp/sock")).unwrap(),
            a
        );
        // Relative and empty paths.
        assert_eq!(
            Address::unix_from_path("rel").unwrap().to_string(),
            "unix:rel"
        );
        let unnamed = Address::unix_from_path("").unwrap();
        assert_eq!(unnamed.to_string(), "unix:");
        assert_eq!(unnamed.unix_path(), Some(Path::new("")));
        // Exactly UNIX_PATH_MAX bytes fit.
        let max = "p".repeat(Address::UNIX_PATH_MAX);
        assert!(Address::unix_from_path(&max).is_ok());
        // Non-UTF-8 paths are kept byte for byte.
        let raw = Path::new(OsStr::from_bytes(b"/tmp/\xff"));
        let b = Address::unix_from_path(raw).unwrap();
        assert_eq!(b.unix_path(), Some(raw));
        assert_eq!(b.to_string(), "unix:/tmp/\u{fffd}");
    }

    #[test]
    fn unix_from_path_errors() {
        #[cfg(target_os = "linux")]
        assert_eq!(Address::UNIX_PATH_MAX, 107);
        let long = "p".repeat(Address::UNIX_PATH_MAX + 1);
        let err = Address::unix_from_path(&long).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::NameTooLong);
        assert_eq!(err.errno(), libc::ENAMETOOLONG);
        assert!(err.to_string().contains("fit in sun_path"), "{err}");
        check_error(&err);

        let err = Address::unix_from_path("/tmp/a\0b").unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::InvalidPath);
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(err.to_string().contains("NUL"), "{err}");
        check_error(&err);
    }

    #[test]
    fn unix_abstract_names() {
        let a = Address::unix_abstract(b"name").unwrap();
        assert!(a.is_unix());
        assert_eq!(a.unix_abstract_name(), Some(&b"name"[..]));
        assert_eq!(a.unix_path(), None);
        assert_eq!(a.to_string(), "unix:@name");
        let b = Address::unix_abstract(b"a\\b\0\xff ~").unwrap();
        assert_eq!(b.to_string(), "unix:@a\\x5cb\\x00\\xff ~");
        assert_eq!(b.to_string().parse::<Address>().unwrap(), b);
        assert_eq!(Address::unix_abstract(b"").unwrap().to_string(), "unix:@");
        assert!(Address::unix_abstract(vec![7u8; Address::UNIX_PATH_MAX]).is_ok());
        let err = Address::unix_abstract(vec![0u8; Address::UNIX_PATH_MAX + 1]).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::NameTooLong);
        check_error(&err);
        // Abstract and path addresses never compare equal.
        assert_ne!(a, Address::unix_from_path("name").unwrap());
        // The documented exception: a relative path starting with "@" reads
        // back as an abstract name, or is rejected as one.
        let at = Address::unix_from_path("@name").unwrap();
        assert_eq!(at.to_string().parse::<Address>().unwrap(), a);
        let bad = Address::unix_from_path("@\\").unwrap();
        assert_eq!(bad.to_string(), "unix:@\\");
        assert_eq!(
            err_kind(bad.to_string().parse::<Address>()),
            AddressErrorKind::Malformed
        );
    }

    // ---- accessors ----

    #[test]
    fn accessors() {
        let mut a = v4("1.2.3.4", 445);
        assert_eq!(a.inet_port(), Some(445));
        assert_eq!(a.inet_addr_string().as_deref(), Some("1.2.3.4"));
        assert_eq!(a.unix_path(), None);
        a.set_inet_port(0).unwrap();
        assert_eq!(a.to_string(), "ipv4:1.2.3.4:0");

        let mut b = v6("::ffff:1.2.3.4", 1);
        assert_eq!(b.inet_addr_string().as_deref(), Some("::ffff:1.2.3.4"));
        b.set_inet_port(2).unwrap();
        assert_eq!(b.inet_port(), Some(2));

        for name in ["ip", "IP", "ipv4", "ipv6", "unix", "", "ipv"] {
            let ok = matches!(name, "ip" | "IP" | "ipv4");
            assert_eq!(a.is_inet(name), ok, "{name}");
        }

        let mut u = Address::unix_from_path("/s").unwrap();
        let err = u.set_inet_port(1).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::NotInet);
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(err.to_string().contains("unix:/s"), "{err}");
        assert_eq!(u, Address::unix_from_path("/s").unwrap());
        let mut abs = Address::unix_abstract("x").unwrap();
        assert!(abs.set_inet_port(1).is_err());
        assert!(!abs.is_inet("ip"));
    }

    #[test]
    fn std_conversions() {
        let sa: SocketAddr = "[fe80::1%4]:22".parse().unwrap();
        let a = Address::from(sa);
        assert_eq!(SocketAddr::try_from(&a).unwrap(), sa);
        assert_eq!(a, v6("fe80::1%4", 22));
        let v4sa: SocketAddrV4 = "1.2.3.4:5".parse().unwrap();
        assert_eq!(Address::from(v4sa), v4("1.2.3.4", 5));
        let v6sa = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 5, 0x12345, 0);
        let b = Address::from(v6sa);
        assert_eq!(b.to_socket_addr(), Some(SocketAddr::V6(v6sa)));
        assert_ne!(b, v6("::1", 5), "the flow label is part of the value");
        assert_eq!(format!("{b:?}"), "Address(ipv6:::1:5, flowinfo=0x12345)");

        let u = Address::unix_from_path("/x").unwrap();
        let err = SocketAddr::try_from(&u).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::NotInet);

        let io_err = io::Error::from(err.clone());
        assert_eq!(io_err.kind(), io::ErrorKind::InvalidInput);
        let inner = io_err.get_ref().unwrap().downcast_ref::<AddressError>();
        assert_eq!(inner, Some(&err));
        let fam_err = Address::inet_from_strings("x", None, 0).unwrap_err();
        assert_eq!(io::Error::from(fam_err).kind(), io::ErrorKind::Unsupported);
    }

    // ---- Display / Debug ----

    #[test]
    fn display_exact() {
        assert_eq!(v4("1.2.3.4", 445).to_string(), "ipv4:1.2.3.4:445");
        assert_eq!(v6("2001::1", 445).to_string(), "ipv6:2001::1:445");
        assert_eq!(v6("::", 1234).to_string(), "ipv6::::1234");
        assert_eq!(v6("::1", 0).to_string(), "ipv6:::1:0");
        assert_eq!(v6("1::", 1).to_string(), "ipv6:1:::1");
        assert_eq!(
            v6("2001:DB8:0:0:1:0:0:1", 1).to_string(),
            "ipv6:2001:db8::1:0:0:1:1"
        );
        assert_eq!(
            v6("2001:db8:0:1:1:1:1:1", 1).to_string(),
            "ipv6:2001:db8:0:1:1:1:1:1:1"
        );
        assert_eq!(
            v6("::ffff:1.2.3.4", 80).to_string(),
            "ipv6:::ffff:1.2.3.4:80"
        );
        assert_eq!(v6("::ffff:0:0", 80).to_string(), "ipv6:::ffff:0.0.0.0:80");
        // glibc prints IPv4-compatible addresses in dotted form too.
        assert_eq!(v6("::1.2.3.4", 80).to_string(), "ipv6:::1.2.3.4:80");
        assert_eq!(v6("::102:0", 80).to_string(), "ipv6:::1.2.0.0:80");
        assert_eq!(
            Address::unix_from_path("/path").unwrap().to_string(),
            "unix:/path"
        );
        assert_eq!(
            format!("{:?}", v4("1.2.3.4", 445)),
            "Address(ipv4:1.2.3.4:445)"
        );
        assert_eq!(format!("{:<18}|", v4("1.2.3.4", 5)), "ipv4:1.2.3.4:5    |");
    }

    #[test]
    fn ipv6_formatting_matches_inet_ntop() {
        for text in [
            "::",
            "::1",
            "1::",
            "::2:0:0:0:0:0:0",
            "1:0:1:0:0:1:0:0",
            "0:0:1:0:0:1:0:0",
            "1:0:0:1:0:0:0:1",
            "::ffff:1.2.3.4",
            "::fffe:1.2.3.4",
            "::1:ffff:1.2.3.4",
            "::1.2.3.4",
            "0:0:0:0:0:1:1.2.3.4",
            "64:ff9b::1.2.3.4",
            "ffff::",
            "1:2:3:4:5:6:7:8",
        ] {
            let ip: Ipv6Addr = text.parse().unwrap();
            let mut mine = String::new();
            write_ipv6(&mut mine, &ip).unwrap();
            assert_eq!(mine, ntop(IpAddr::V6(ip)), "{text}");
        }
    }

    // ---- FromStr ----

    #[test]
    fn from_str_forms() {
        let p = |s: &str| s.parse::<Address>().unwrap();
        assert_eq!(p("ipv4:1.2.3.4:445"), v4("1.2.3.4", 445));
        assert_eq!(p("IPv4:1.2.3.4:445"), v4("1.2.3.4", 445));
        assert_eq!(p("ipv6:2001::1:445"), v6("2001::1", 445));
        assert_eq!(p("ipv6::::1234"), v6("::", 1234));
        assert_eq!(p("ipv6:[::]:1234"), v6("::", 1234));
        assert_eq!(p("ipv6:[fe80::1%2]:1"), v6("fe80::1%2", 1));
        assert_eq!(p("ipv6:fe80::1%2:1"), v6("fe80::1%2", 1));
        assert_eq!(p("ipv6:::ffff:1.2.3.4:9"), v6("::ffff:1.2.3.4", 9));
        assert_eq!(p("unix:/path"), Address::unix_from_path("/path").unwrap());
        assert_eq!(p("unix:/a:b"), Address::unix_from_path("/a:b").unwrap());
        assert_eq!(p("unix:"), Address::unix_from_path("").unwrap());
        assert_eq!(
            p("unix:@abc\\x00"),
            Address::unix_abstract(b"abc\0").unwrap()
        );
        assert_eq!(p("unix:@\u{e9}"), Address::unix_abstract("\u{e9}").unwrap());
    }

    #[test]
    fn from_str_errors() {
        for (s, kind) in [
            ("", AddressErrorKind::Malformed),
            ("1.2.3.4", AddressErrorKind::Malformed),
            ("ipv4:1.2.3.4", AddressErrorKind::Malformed),
            ("ipv6:[::1]", AddressErrorKind::Malformed),
            ("ipv6:[::1", AddressErrorKind::Malformed),
            ("ipv6:[::1]x:80", AddressErrorKind::Malformed),
            ("unix:@\\x0", AddressErrorKind::Malformed),
            ("unix:@\\y00", AddressErrorKind::Malformed),
            ("unix:@\\", AddressErrorKind::Malformed),
            ("ipv4:1.2.3.4:", AddressErrorKind::InvalidPort),
            ("ipv4:1.2.3.4:65536", AddressErrorKind::InvalidPort),
            ("ipv6:[::1]:x", AddressErrorKind::InvalidPort),
            ("ipv4:::1:80", AddressErrorKind::InvalidAddress),
            ("ipv6:1.2.3.4:80", AddressErrorKind::InvalidAddress),
            ("ipv4:[1.2.3.4]:80", AddressErrorKind::InvalidAddress),
            ("ipv4:host:80", AddressErrorKind::InvalidAddress),
            ("ipv6::80", AddressErrorKind::InvalidAddress),
            ("ip:1.2.3.4:80", AddressErrorKind::UnsupportedFamily),
            ("tcp:1.2.3.4:80", AddressErrorKind::UnsupportedFamily),
            ("unix:/a\0b", AddressErrorKind::InvalidPath),
        ] {
            let err = s.parse::<Address>().unwrap_err();
            assert_eq!(err.kind(), kind, "{s:?}: {err}");
            check_error(&err);
        }
        let long = format!("unix:/{}", "x".repeat(Address::UNIX_PATH_MAX));
        assert_eq!(
            err_kind(long.parse::<Address>()),
            AddressErrorKind::NameTooLong
        );
        let long = format!("unix:@{}", "x".repeat(Address::UNIX_PATH_MAX + 1));
        assert_eq!(
            err_kind(long.parse::<Address>()),
            AddressErrorKind::NameTooLong
        );
    }

    #[test]
    fn error_message_truncates_long_input() {
        let long = "z".repeat(10_000);
        let err = Address::inet_from_strings("ip", Some(&long), 0).unwrap_err();
        assert_eq!(err.input(), long);
        let msg = err.to_string();
        assert!(msg.len() < 400, "{}", msg.len());
        assert!(msg.contains("...") && msg.contains("not resolved"), "{msg}");
    }

    // ---- sockaddr ----

    #[test]
    fn sockaddr_inet_layout() {
        let a = v4("10.1.2.3", 0x1234);
        let (storage, len) = a.to_sockaddr();
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_in>());
        let sin: &libc::sockaddr_in = storage_as(&storage);
        assert_eq!(i32::from(sin.sin_family), libc::AF_INET);
        assert_eq!(sin.sin_port.to_ne_bytes(), [0x12, 0x34]);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(Address::from_sockaddr_storage(&storage, len).unwrap(), a);

        let b = Address::from(SocketAddrV6::new("2001:db8::7".parse().unwrap(), 80, 9, 3));
        let (storage, len) = b.to_sockaddr();
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_in6>());
        let sin6: &libc::sockaddr_in6 = storage_as(&storage);
        assert_eq!(i32::from(sin6.sin6_family), libc::AF_INET6);
        assert_eq!(sin6.sin6_port.to_ne_bytes(), [0, 80]);
        assert_eq!(sin6.sin6_scope_id, 3);
        assert_eq!(sin6.sin6_flowinfo, 9);
        assert_eq!(Address::from_sockaddr_storage(&storage, len).unwrap(), b);
        // A longer length than needed is fine for inet.
        assert_eq!(
            Address::from_sockaddr_storage(&storage, mem::size_of_val(&storage) as _).unwrap(),
            b
        );
    }

    #[test]
    fn sockaddr_unix_layout() {
        let a = Address::unix_from_path("/tmp/x").unwrap();
        let (storage, len) = a.to_sockaddr();
        assert_eq!(len as usize, SUN_PATH_OFFSET + 6 + 1);
        let sun: &libc::sockaddr_un = storage_as(&storage);
        assert_eq!(i32::from(sun.sun_family), libc::AF_UNIX);
        assert_eq!(sun.sun_path[6], 0);
        assert_eq!(Address::from_sockaddr_storage(&storage, len).unwrap(), a);
        // Without the NUL in the length (BSD's SUN_LEN), and with the full
        // structure or more (C tsocket): same address.
        for l in [len - 1, mem::size_of::<libc::sockaddr_un>() as _, 128] {
            assert_eq!(
                Address::from_sockaddr_storage(&storage, l).unwrap(),
                a,
                "{l}"
            );
        }

        let unnamed = Address::unix_from_path("").unwrap();
        let (storage, len) = unnamed.to_sockaddr();
        assert_eq!(len as usize, SUN_PATH_OFFSET);
        assert_eq!(
            Address::from_sockaddr_storage(&storage, len).unwrap(),
            unnamed
        );

        let abs = Address::unix_abstract(b"a\0b").unwrap();
        let (storage, len) = abs.to_sockaddr();
        assert_eq!(len as usize, SUN_PATH_OFFSET + 4);
        let sun: &libc::sockaddr_un = storage_as(&storage);
        assert_eq!(sun.sun_path[..4], [0, b'a' as _, 0, b'b' as _]);
        assert_eq!(Address::from_sockaddr_storage(&storage, len).unwrap(), abs);

        let max = Address::unix_from_path("m".repeat(Address::UNIX_PATH_MAX)).unwrap();
        let (storage, len) = max.to_sockaddr();
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_un>());
        assert_eq!(Address::from_sockaddr_storage(&storage, len).unwrap(), max);
    }

    #[test]
    fn sockaddr_errors() {
        let mut storage = zeroed_storage();
        for len in [0, 1] {
            let err = Address::from_sockaddr_storage(&storage, len).unwrap_err();
            assert_eq!(err.kind(), AddressErrorKind::InvalidSockaddr);
            check_error(&err);
        }
        storage.ss_family = libc::AF_INET as libc::sa_family_t;
        let err = Address::from_sockaddr_storage(&storage, 8).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::InvalidSockaddr);
        assert_eq!(
            err.to_string(),
            r#"invalid sockaddr "AF_INET, length 8": shorter than sockaddr_in (16 bytes)"#
        );
        storage.ss_family = libc::AF_INET6 as libc::sa_family_t;
        let err = Address::from_sockaddr_storage(&storage, 16).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::InvalidSockaddr);
        check_error(&err);
        for family in [libc::AF_UNSPEC, libc::AF_APPLETALK, 255] {
            storage.ss_family = family as libc::sa_family_t;
            let err = Address::from_sockaddr_storage(&storage, 16).unwrap_err();
            assert_eq!(err.kind(), AddressErrorKind::UnsupportedFamily);
            assert_eq!(err.errno(), libc::EAFNOSUPPORT);
            check_error(&err);
        }
        // A unix path that fills sun_path without a NUL cannot be handed
        // back to the kernel with its NUL: rejected.
        storage.ss_family = libc::AF_UNIX as libc::sa_family_t;
        {
            let sun: &mut libc::sockaddr_un = storage_as_mut(&mut storage);
            sun.sun_path.iter_mut().for_each(|c| *c = b'q' as _);
        }
        let full = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let err = Address::from_sockaddr_storage(&storage, full).unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::NameTooLong);
        check_error(&err);
        // One byte shorter fits.
        let a = Address::from_sockaddr_storage(&storage, full - 1).unwrap();
        assert_eq!(
            a.unix_path().unwrap().as_os_str().len(),
            Address::UNIX_PATH_MAX
        );

        // SAFETY: a null pointer is explicitly allowed and rejected.
        let err = unsafe { Address::from_raw_sockaddr(ptr::null(), 16) }.unwrap_err();
        assert_eq!(err.kind(), AddressErrorKind::InvalidSockaddr);
    }

    #[test]
    fn raw_sockaddr_unaligned_and_oversized() {
        let a = v6("2001:db8::1", 9);
        let (storage, len) = a.to_sockaddr();
        // Put the bytes at an odd offset in a larger buffer.
        let mut buf = vec![0u8; 1 + 200];
        // SAFETY: `storage` is `size_of_val(&storage)` readable bytes and
        // `buf[1..]` has room for them; the regions do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(
                ptr::addr_of!(storage).cast::<u8>(),
                buf.as_mut_ptr().add(1),
                mem::size_of_val(&storage),
            );
        }
        let p = buf[1..].as_ptr().cast::<libc::sockaddr>();
        // SAFETY: `p` is valid for 200 bytes of reads, more than `len` and
        // more than sizeof(sockaddr_storage).
        assert_eq!(unsafe { Address::from_raw_sockaddr(p, len) }.unwrap(), a);
        // SAFETY: as above; the length is clamped to sizeof(sockaddr_storage).
        assert_eq!(unsafe { Address::from_raw_sockaddr(p, 200) }.unwrap(), a);
    }

    /// getsockname on `fd`, read through `from_sockaddr_storage`.
    fn sockname(fd: i32) -> Result<Address, AddressError> {
        let mut storage = zeroed_storage();
        let mut len = mem::size_of_val(&storage) as libc::socklen_t;
        // SAFETY: `storage` is writable for `len` bytes, and `len` is a
        // valid in/out length.
        let rc = unsafe { libc::getsockname(fd, ptr::addr_of_mut!(storage).cast(), &mut len) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        Address::from_sockaddr_storage(&storage, len)
    }

    #[test]
    fn kernel_inet_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let got = sockname(listener.as_raw_fd()).unwrap();
        assert_eq!(got, Address::from(listener.local_addr().unwrap()));
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            let got = sockname(l6.as_raw_fd()).unwrap();
            assert_eq!(got, Address::from(l6.local_addr().unwrap()));
        }
    }

    #[test]
    fn kernel_unix_addresses() {
        let dir = std::env::temp_dir().join(format!("tsocket-address-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);

        // Bind through our own sockaddr, read back through getsockname.
        let want = Address::unix_from_path(&path).unwrap();
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0);
        let (storage, len) = want.to_sockaddr();
        // SAFETY: `storage` holds `len` valid bytes of a sockaddr_un.
        let rc = unsafe { libc::bind(fd, ptr::addr_of!(storage).cast(), len) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        assert_eq!(sockname(fd).unwrap(), want);
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };

        // An unbound socket has the unnamed address.
        let unbound = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(
            sockname(unbound.as_raw_fd()).unwrap(),
            Address::unix_from_path("").unwrap()
        );

        #[cfg(target_os = "linux")]
        {
            // Binding the unnamed address autobinds to an abstract name.
            let (storage, len) = Address::unix_from_path("").unwrap().to_sockaddr();
            // SAFETY: as above.
            let rc = unsafe { libc::bind(unbound.as_raw_fd(), ptr::addr_of!(storage).cast(), len) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            let auto = sockname(unbound.as_raw_fd()).unwrap();
            assert_eq!(
                auto.unix_abstract_name().map(<[u8]>::len),
                Some(5),
                "{auto}"
            );

            // And an explicit abstract name round-trips through the kernel.
            let name = format!("tsocket-test-{}", std::process::id());
            let want = Address::unix_abstract(&name).unwrap();
            // SAFETY: plain socket(2) call.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
            let (storage, len) = want.to_sockaddr();
            // SAFETY: as above.
            let rc = unsafe { libc::bind(fd, ptr::addr_of!(storage).cast(), len) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            assert_eq!(sockname(fd).unwrap(), want);
            // SAFETY: `fd` is ours and closed once.
            unsafe { libc::close(fd) };
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ---- property tests ----

    /// IPv6 addresses with many zero groups, so that every `::` placement
    /// and the embedded-IPv4 forms are exercised.
    fn ipv6_strategy() -> impl Strategy<Value = Ipv6Addr> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(Ipv6Addr::from),
            prop::array::uniform8(prop_oneof![
                4 => Just(0u16),
                1 => Just(0xffff_u16),
                2 => any::<u16>(),
            ])
            .prop_map(|g| Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])),
        ]
    }

    /// Unix paths that round-trip through the string form: UTF-8, no NUL,
    /// not starting with `@`, at most `UNIX_PATH_MAX` bytes.
    fn unix_path_strategy() -> impl Strategy<Value = String> {
        "[^\\x00@][^\\x00]{0,60}|"
            .prop_filter("fits in sun_path", |s| s.len() <= Address::UNIX_PATH_MAX)
    }

    /// Strings that look like addresses, to reach the parsers' inner paths.
    fn addressish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(ipv4:|ipv6:|unix:|IPv6:|ip:|unix:@)?[0-9a-fA-F:.%\\[\\]@x\\\\/ -]{0,40}",
            "\\[?[0-9a-f:]{0,20}\\]?(:[0-9]{0,7})?",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9+-]{0,7})?",
        ]
    }

    /// Checks the outcome of a parser: an error obeys the error contract,
    /// and an address prints to a string that parses back to it (except a
    /// path starting with `@`, which reads back as an abstract name or is
    /// rejected as one, as documented).
    fn check_outcome(r: &Result<Address, AddressError>) {
        match r {
            Ok(a)
                if a.unix_path()
                    .is_some_and(|p| p.as_os_str().as_bytes().starts_with(b"@")) =>
            {
                // Read back as an abstract name, or rejected as one.
                match a.to_string().parse::<Address>() {
                    Ok(back) => assert!(back.unix_abstract_name().is_some()),
                    Err(e) => check_error(&e),
                }
            }
            Ok(a) => {
                let s = a.to_string();
                assert_eq!(s.parse::<Address>().as_ref(), Ok(a), "{s}");
            }
            Err(e) => check_error(e),
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(
            s in addressish(),
            fam in prop_oneof![
                Just("ip".to_string()), Just("ipv4".to_string()),
                Just("IPV6".to_string()), any::<String>()
            ],
            port in any::<u16>(),
        ) {
            check_outcome(&s.parse::<Address>());
            check_outcome(&Address::inet_from_strings(&fam, Some(&s), port));
            check_outcome(&Address::inet_from_hostport_strings(&fam, Some(&s), port));
            check_outcome(&Address::unix_from_path(&s));
            check_outcome(&Address::unix_abstract(s.as_bytes()));
        }

        #[test]
        fn sockaddr_parser_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..=mem::size_of::<libc::sockaddr_storage>()),
            family in prop_oneof![
                Just(libc::AF_INET), Just(libc::AF_INET6), Just(libc::AF_UNIX), any::<u8>().prop_map(i32::from)
            ],
            len in any::<libc::socklen_t>(),
        ) {
            let mut storage = zeroed_storage();
            // SAFETY: `bytes` fits in `storage` (at most its size) and they
            // do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), ptr::addr_of_mut!(storage).cast::<u8>(), bytes.len());
            }
            storage.ss_family = family as libc::sa_family_t;
            match Address::from_sockaddr_storage(&storage, len) {
                Ok(a) => {
                    let (s2, l2) = a.to_sockaddr();
                    prop_assert_eq!(Address::from_sockaddr_storage(&s2, l2), Ok(a));
                }
                Err(e) => check_error(&e),
            }
        }

        /// Numeric addresses are read exactly as the C library's
        /// `inet_pton` reads them (which is what tsocket's `getaddrinfo`
        /// with `AI_NUMERICHOST` does, less the `inet_aton` shorthands).
        #[test]
        fn numeric_parsing_matches_inet_pton(
            text in "(::)?([0-9a-fA-F]{0,5}(:|::)){0,8}[0-9a-fA-F]{0,5}(:?0?[0-9]{1,3}(\\.0?[0-9]{1,3}){1,4})?(::)?",
        ) {
            for (family, af) in [("ipv4", libc::AF_INET), ("ipv6", libc::AF_INET6)] {
                let ours = Address::inet_from_strings(family, Some(&text), 0)
                    .ok()
                    .and_then(|a| a.to_socket_addr())
                    .map(|sa| sa.ip());
                prop_assert_eq!(ours, pton(af, &text), "{} {:?}", family, text);
            }
        }

        #[test]
        fn ipv4_round_trips(ip in any::<Ipv4Addr>(), port in any::<u16>()) {
            let a = Address::from(SocketAddrV4::new(ip, port));
            let s = a.to_string();
            prop_assert_eq!(&s, &format!("ipv4:{}:{}", ntop(IpAddr::V4(ip)), port));
            prop_assert_eq!(s.parse::<Address>(), Ok(a.clone()));
            let (storage, len) = a.to_sockaddr();
            prop_assert_eq!(Address::from_sockaddr_storage(&storage, len), Ok(a.clone()));
            let again = Address::inet_from_strings("ipv4", a.inet_addr_string().as_deref(), port);
            prop_assert_eq!(again, Ok(a.clone()));
            let hp = Address::inet_from_hostport_strings("ip", Some(&format!("{ip}:{port}")), 1);
            prop_assert_eq!(hp, Ok(a));
        }

        #[test]
        fn ipv6_round_trips(
            ip in ipv6_strategy(),
            port in any::<u16>(),
            scope in prop_oneof![Just(0u32), any::<u32>()],
            flowinfo in any::<u32>(),
        ) {
            // String form: exactly inet_ntop, and back.
            let a = Address::from(SocketAddrV6::new(ip, port, 0, scope));
            let s = a.to_string();
            let scope_text = if scope == 0 { String::new() } else { format!("%{scope}") };
            prop_assert_eq!(&s, &format!("ipv6:{}{}:{}", ntop(IpAddr::V6(ip)), scope_text, port));
            prop_assert_eq!(s.parse::<Address>(), Ok(a.clone()));
            let bracketed = format!("ipv6:[{}]:{}", a.inet_addr_string().unwrap(), port);
            prop_assert_eq!(bracketed.parse::<Address>(), Ok(a.clone()));
            let hp = format!("[{}]:{}", a.inet_addr_string().unwrap(), port);
            prop_assert_eq!(Address::inet_from_hostport_strings("ipv6", Some(&hp), 1), Ok(a.clone()));
            // sockaddr form keeps the flow label too.
            let b = Address::from(SocketAddrV6::new(ip, port, flowinfo, scope));
            let (storage, len) = b.to_sockaddr();
            prop_assert_eq!(Address::from_sockaddr_storage(&storage, len), Ok(b.clone()));
            prop_assert_eq!(b.to_socket_addr(), Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope))));
        }

        #[test]
        fn unix_path_round_trips(path in unix_path_strategy()) {
            let a = Address::unix_from_path(&path).unwrap();
            let s = a.to_string();
            prop_assert_eq!(&s, &format!("unix:{path}"));
            prop_assert_eq!(s.parse::<Address>(), Ok(a.clone()));
            let (storage, len) = a.to_sockaddr();
            prop_assert_eq!(Address::from_sockaddr_storage(&storage, len), Ok(a));
        }

        #[test]
        fn unix_raw_path_round_trips_through_sockaddr(
            bytes in prop::collection::vec(1u8..=255, 0..=Address::UNIX_PATH_MAX)
        ) {
            let a = Address::unix_from_path(Path::new(OsStr::from_bytes(&bytes))).unwrap();
            let (storage, len) = a.to_sockaddr();
            prop_assert_eq!(Address::from_sockaddr_storage(&storage, len), Ok(a));
        }

        #[test]
        fn unix_abstract_round_trips(
            name in prop::collection::vec(any::<u8>(), 0..=Address::UNIX_PATH_MAX)
        ) {
            let a = Address::unix_abstract(&name).unwrap();
            prop_assert_eq!(a.to_string().parse::<Address>(), Ok(a.clone()));
            let (storage, len) = a.to_sockaddr();
            prop_assert_eq!(Address::from_sockaddr_storage(&storage, len), Ok(a));
        }
    }
}
