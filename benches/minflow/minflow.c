// minflow: the least a live flow tracker can do, as a yardstick for wiremap's live cost.
// libpcap's ring as tcpdump uses it (2 MiB buffer), Ethernet/IPv4/TCP/UDP headers, a
// 5-tuple open-addressing table (2^18 slots, never evicted; past that, packets are counted as
// `full`) with packet,
// byte and last-sequence counters per flow. No TCP state, no L7, no load balancers.
//
//   gcc -O2 -o minflow benches/minflow/minflow.c -lpcap
//   ./minflow IFACE        (root; stops on SIGINT/SIGTERM, prints its counts)
//
// See benches/HISTORY.md ("fifth session") for what it measured beside tcpdump and wiremap.
#include <pcap.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#define SLOTS (1<<18)
struct flow { uint32_t a, b; uint16_t pa, pb; uint8_t proto, used; uint64_t pkts, bytes; uint32_t seq[2]; };
static struct flow *tab;
static uint64_t npk, nflows, other, full;
static pcap_t *p;
static void stop(int s) { (void)s; pcap_breakloop(p); }
static void cb(u_char *u, const struct pcap_pkthdr *h, const u_char *d) {
  (void)u; npk++;
  if (h->caplen < 34) { other++; return; }
  uint16_t et = (d[12] << 8) | d[13];
  if (et != 0x0800) { other++; return; }
  const u_char *ip = d + 14;
  int ihl = (ip[0] & 15) * 4;
  if (ihl < 20) { other++; return; }
  uint8_t proto = ip[9];
  uint32_t s, t; memcpy(&s, ip + 12, 4); memcpy(&t, ip + 16, 4);
  const u_char *l4 = ip + ihl;
  if ((proto != 6 && proto != 17) || l4 + 8 > d + h->caplen) { other++; return; }
  uint16_t sp = (l4[0] << 8) | l4[1], dp = (l4[2] << 8) | l4[3];
  int dir = 0;
  uint32_t a = s, b = t; uint16_t pa = sp, pb = dp;
  if (a > b || (a == b && pa > pb)) { a = t; b = s; pa = dp; pb = sp; dir = 1; }
  uint64_t k = ((uint64_t)a * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)b << 17) ^ ((uint64_t)pa << 32) ^ pb ^ ((uint64_t)proto << 48);
  k *= 0xD6E8FEB86659FD93ull;
  uint32_t i = (uint32_t)(k >> 46);
  for (uint32_t n = 0; n < SLOTS; n++) {
    struct flow *f = &tab[i];
    if (!f->used) { f->used = 1; f->a = a; f->b = b; f->pa = pa; f->pb = pb; f->proto = proto; nflows++; }
    if (f->a == a && f->b == b && f->pa == pa && f->pb == pb && f->proto == proto) {
      f->pkts++; f->bytes += h->len;
      if (proto == 6 && l4 + 20 <= d + h->caplen) { uint32_t q; memcpy(&q, l4 + 4, 4); f->seq[dir] = q; }
      return;
    }
    i = (i + 1) & (SLOTS - 1);
  }
  full++;
}
int main(int argc, char **argv) {
  char err[PCAP_ERRBUF_SIZE];
  tab = calloc(SLOTS, sizeof *tab);
  if (argc != 2 || !tab) { fprintf(stderr, "usage: minflow IFACE\n"); return 2; }
  p = pcap_create(argv[1], err);
  if (!p) { fprintf(stderr, "%s\n", err); return 1; }
  pcap_set_snaplen(p, 262144); pcap_set_buffer_size(p, 2 << 20); pcap_set_timeout(p, 1000);
  if (pcap_activate(p) < 0) { fprintf(stderr, "%s\n", pcap_geterr(p)); return 1; }
  signal(SIGINT, stop); signal(SIGTERM, stop);
  fprintf(stderr, "capturing on %s\n", argv[1]);
  pcap_loop(p, -1, cb, NULL);
  struct pcap_stat st; pcap_stats(p, &st);
  fprintf(stderr, "packets %lu flows %lu other %lu full %lu drops %u\n", npk, nflows, other, full, st.ps_drop);
  return 0;
}
