"""Addresses as the defender counts them, and fast network membership."""

import ipaddress

# An IPv6 client controls its whole /64 (SLAAC, privacy addresses): scoring
# single IPv6 addresses would give every attacker 2**64 fresh starts.
IPV6_PREFIX = 64


def parse(ip):
    """Return ``ip`` as an ip_address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network_of(value):
    """Return ``value`` (an address or CIDR network) as an ip_network.

    An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/104``) is the IPv4 one
    (``10.0.0.0/8``): client addresses are looked up as IPv4. Raise
    ValueError when it is neither.
    """
    network = ipaddress.ip_network(str(value).strip(), strict=False)
    if network.version == 6 and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def address_key(ip):
    """Return the network the defender scores ``ip`` under: /32 or IPv6 /64."""
    address = parse(ip)
    if address is None:
        return None
    if address.version == 4:
        return f"{address}/32"
    return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))


class NetworkMap:
    """Map networks to values; look an address up in a few dict probes.

    One dict per prefix length in use (a ban list holds /32s, /64s and a
    few wider networks), so a lookup costs one probe per length, not one per
    network.
    """

    def __init__(self, items=()):
        # version -> {prefixlen: {network int: (network str, value)}}
        self._by_version = {4: {}, 6: {}}
        for network, value in items:
            self.set(network, value)

    def __len__(self):
        return sum(
            len(table)
            for lengths in self._by_version.values()
            for table in lengths.values()
        )

    def set(self, network, value):
        net = network_of(network)
        table = self._by_version[net.version].setdefault(net.prefixlen, {})
        table[int(net.network_address)] = (str(net), value)

    def discard(self, network):
        net = network_of(network)
        lengths = self._by_version[net.version]
        table = lengths.get(net.prefixlen)
        if table is not None:
            table.pop(int(net.network_address), None)
            if not table:
                del lengths[net.prefixlen]

    def get(self, network):
        """Return the value stored for exactly ``network``, or None."""
        net = network_of(network)
        table = self._by_version[net.version].get(net.prefixlen)
        if table is None:
            return None
        found = table.get(int(net.network_address))
        return None if found is None else found[1]

    def lookup(self, ip):
        """Return ``(network, value)`` of the most specific match, or None."""
        address = parse(ip) if not isinstance(ip, ipaddress._BaseAddress) else ip
        if address is None:
            return None
        lengths = self._by_version[address.version]
        if not lengths:
            return None
        bits = address.max_prefixlen
        number = int(address)
        for prefixlen in sorted(lengths, reverse=True):
            shift = bits - prefixlen
            found = lengths[prefixlen].get((number >> shift) << shift)
            if found is not None:
                return found
        return None

    def items(self):
        for lengths in self._by_version.values():
            for table in lengths.values():
                yield from table.values()
