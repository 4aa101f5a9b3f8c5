//! ConfigureNetwork: the guest side of the pod's network, with the classic ioctls (enough for
//! one IPv4 address per interface, which is what a pod gets from CNI).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use berth_sandbox_proto::{Interface, Route};

use crate::error::{self, AgentError};
use crate::sys;

/// `10.88.0.5/16` → address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), AgentError> {
    let bad = || AgentError::InvalidArgument(format!("bad CIDR address {s:?}"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((addr, prefix))
}

/// A route's destination: `default` is 0.0.0.0/0.
pub fn parse_destination(s: &str) -> Result<(IpAddr, u8), AgentError> {
    if s == "default" || s.is_empty() {
        return Ok((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    }
    parse_cidr(s)
}

/// `aa:bb:cc:dd:ee:ff` → the six bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], AgentError> {
    let bad = || AgentError::InvalidArgument(format!("bad MAC address {s:?}"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// The network part of `addr` (the kernel refuses a route whose destination has host bits).
pub fn network(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & u32::from(netmask(prefix)))
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads sockaddr_in
    // through the family field, as every IPv4 caller of these ioctls does.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

struct Sock(OwnedFd);

impl Sock {
    fn new() -> Result<Sock, AgentError> {
        // SAFETY: socket has no memory arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(error::sys("socket(AF_INET) for interface ioctls")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(Sock(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ifreq(name: &str) -> Result<libc::ifreq, AgentError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(AgentError::InvalidArgument(format!(
                "bad interface name {name:?}"
            )));
        }
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(ifr)
    }

    fn ioctl<T>(
        &self,
        req: libc::c_ulong,
        arg: &mut T,
        what: String,
        dev: &str,
    ) -> Result<(), AgentError> {
        // SAFETY: `arg` is the structure type `req` reads or writes.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), req, arg as *mut T) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Err(AgentError::NotFound(format!(
                    "{what}: network interface {dev:?} does not exist in the guest"
                )));
            }
            return Err(AgentError::Sys { what, source: e });
        }
        Ok(())
    }

    fn up(&self, name: &str) -> Result<(), AgentError> {
        let mut ifr = Self::ifreq(name)?;
        self.ioctl(
            libc::SIOCGIFFLAGS,
            &mut ifr,
            format!("SIOCGIFFLAGS on {name}"),
            name,
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        self.ioctl(
            libc::SIOCSIFFLAGS,
            &mut ifr,
            format!("bring {name} up"),
            name,
        )
    }

    fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), AgentError> {
        let mut ifr = Self::ifreq(name)?;
        ifr.ifr_ifru.ifru_mtu = i32::try_from(mtu)
            .map_err(|_| AgentError::InvalidArgument(format!("bad MTU {mtu} for {name}")))?;
        self.ioctl(
            libc::SIOCSIFMTU,
            &mut ifr,
            format!("set MTU {mtu} on {name}"),
            name,
        )
    }

    fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), AgentError> {
        let mut ifr = Self::ifreq(name)?;
        // SAFETY: sockaddr is plain data; all zeroes is a valid value.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (d, b) in sa.sa_data.iter_mut().zip(mac) {
            *d = b as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        let shown: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        self.ioctl(
            libc::SIOCSIFHWADDR,
            &mut ifr,
            format!("set MAC {} on {name}", shown.join(":")),
            name,
        )
    }

    fn set_addr(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), AgentError> {
        let mut ifr = Self::ifreq(name)?;
        ifr.ifr_ifru.ifru_addr = sockaddr(addr);
        self.ioctl(
            libc::SIOCSIFADDR,
            &mut ifr,
            format!("set address {addr} on {name}"),
            name,
        )?;
        let mut ifr = Self::ifreq(name)?;
        ifr.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix));
        self.ioctl(
            libc::SIOCSIFNETMASK,
            &mut ifr,
            format!("set netmask /{prefix} on {name}"),
            name,
        )
    }

    fn add_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gw: Option<Ipv4Addr>,
        dev: &str,
    ) -> Result<(), AgentError> {
        let devc = sys::cstring(dev, "route device")?;
        // SAFETY: rtentry is plain data; all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(network(dst, prefix));
        rt.rt_genmask = sockaddr(netmask(prefix));
        rt.rt_flags = libc::RTF_UP;
        if prefix == 32 {
            rt.rt_flags |= libc::RTF_HOST;
        }
        if let Some(gw) = gw {
            rt.rt_gateway = sockaddr(gw);
            rt.rt_flags |= libc::RTF_GATEWAY;
        }
        // The kernel only reads the device name during the call; `devc` outlives it.
        rt.rt_dev = devc.as_ptr().cast_mut();
        let via = gw.map(|g| format!(" via {g}")).unwrap_or_default();
        match self.ioctl(
            libc::SIOCADDRT,
            &mut rt,
            format!("add route {}/{prefix}{via} dev {dev}", network(dst, prefix)),
            dev,
        ) {
            // The kernel adds the connected route of an address itself.
            Err(AgentError::Sys { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            r => r,
        }
    }
}

/// Brings `lo` and the interfaces up with their addresses, adds the routes, sets the hostname.
/// What the ioctls cannot do (IPv6) is skipped and reported through `log`.
pub fn configure(
    interfaces: &[Interface],
    routes: &[Route],
    hostname: &str,
    log: &dyn Fn(String),
) -> Result<(), AgentError> {
    let sock = Sock::new()?;
    sock.up("lo")?;
    for iface in interfaces {
        let name = iface.name.as_str();
        // Before the device is up: most drivers refuse a new address on a running device.
        if !iface.mac.is_empty() {
            sock.set_mac(name, parse_mac(&iface.mac)?)?;
        }
        if iface.mtu != 0 {
            sock.set_mtu(name, iface.mtu)?;
        }
        let mut have_v4 = false;
        for a in &iface.addresses {
            match parse_cidr(a)? {
                (IpAddr::V4(v4), prefix) if !have_v4 => {
                    sock.set_addr(name, v4, prefix)?;
                    have_v4 = true;
                }
                (IpAddr::V4(_), _) => log(format!(
                    "interface {name}: only one IPv4 address is supported, {a} skipped"
                )),
                (IpAddr::V6(_), _) => log(format!(
                    "interface {name}: IPv6 address {a} skipped (not supported)"
                )),
            }
        }
        sock.up(name)?;
    }
    for r in routes {
        let (dst, prefix) = parse_destination(&r.destination)?;
        let gw =
            if r.gateway.is_empty() {
                None
            } else {
                Some(r.gateway.parse::<IpAddr>().map_err(|_| {
                    AgentError::InvalidArgument(format!("bad gateway {:?}", r.gateway))
                })?)
            };
        match (dst, gw) {
            (IpAddr::V4(d), None) => sock.add_route(d, prefix, None, &r.device)?,
            (IpAddr::V4(d), Some(IpAddr::V4(g))) => {
                sock.add_route(d, prefix, Some(g), &r.device)?
            }
            _ => log(format!(
                "IPv6 route {} via {:?} dev {} skipped (not supported)",
                r.destination, r.gateway, r.device
            )),
        }
    }
    if !hostname.is_empty() {
        sys::sethostname(hostname).map_err(error::sys(format!("sethostname {hostname:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.88.0.5/16").unwrap(),
            ("10.88.0.5".parse().unwrap(), 16)
        );
        assert_eq!(parse_cidr("fd00::5/64").unwrap().1, 64);
        for bad in [
            "10.88.0.5",
            "10.88.0.5/33",
            "x/8",
            "fd00::1/129",
            "1.2.3.4/-1",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_destination("default").unwrap(),
            (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("aa:0b:cc:dd:ee:ff").unwrap(),
            [0xaa, 0x0b, 0xcc, 0xdd, 0xee, 0xff]
        );
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff",
            "zz:bb:cc:dd:ee:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(23), Ipv4Addr::new(255, 255, 254, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(
            network(Ipv4Addr::new(10, 88, 3, 5), 16),
            Ipv4Addr::new(10, 88, 0, 0)
        );
    }

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sin_port (2 bytes) then the address in network order.
        let d: Vec<u8> = sa.sa_data[2..6].iter().map(|&c| c as u8).collect();
        assert_eq!(d, vec![10, 1, 2, 3]);
    }
}
