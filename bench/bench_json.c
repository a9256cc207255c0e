/* bench_json: the daemon's JSON float path against jansson's generic one.
 *
 * The same n gradient-like floats (default 10^6; values around 1e-3, whose
 * shortest round-trip forms take 6 to 9 digits) as the body of a push,
 * {"grads":[...]}, printed once by codec_float.  Both sides do the whole
 * job, text to floats and floats to text:
 *   decode  ours: jdoc_parse + jdoc_floats + jdoc_free;
 *           jansson: json_loadb + reading every number into floats + json_decref;
 *   encode  ours: jbuf_floats (what a params reply does);
 *           jansson: json_real per float + json_dumpb + json_decref.
 * jansson's json_loadb and json_dumpb alone (tree already built, not read or
 * freed) are reported too, as the strictest baseline.  Floats per second,
 * best of --rounds, the four measured in the same rounds.  In process.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_float.h"
#include "codec_json.h"
#include "common.h"

static char *make_doc(const float *v, size_t n, size_t *len) {
  char *s = malloc(n * (CODEC_FLOAT_MAX + 1) + 32);
  size_t o = (size_t)sprintf(s, "{\"grads\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) s[o++] = ',';
    o += codec_float_print(v[i], s + o);
  }
  o += (size_t)sprintf(s + o, "]}");
  *len = o;
  return s;
}

int main(int argc, char **argv) {
  size_t n = (size_t)atof(bench_arg(argc, argv, "--n", "1e6"));
  int rounds = atoi(bench_arg(argc, argv, "--rounds", "7"));
  bench_out_open(bench_arg(argc, argv, "--out", NULL));
  float *v = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
  bench_fill(v, n, 11, 1e-3f, 0.0f);
  for (size_t i = 0; i < n; i += 7) v[i] *= 1000.0f; /* a few larger magnitudes */
  size_t len;
  char *text = make_doc(v, n, &len);
  bufpool *pool = bufpool_new((size_t)1 << 30);
  derr e = {0};

  double dec_ours = 1e30, dec_jans = 1e30, dec_jans_only = 1e30;
  double enc_ours = 1e30, enc_jans = 1e30, enc_jans_only = 1e30;
  size_t enc_len_ours = 0, enc_len_jans = 0;
  for (int r = 0; r < rounds + 1; r++) {
    /* decode, ours */
    double t0 = bench_now();
    jdoc d;
    if (jdoc_parse(&d, pool, text, len, &e) < 0 ||
        jdoc_floats(&d, json_object_get(d.root, "grads"), out, n, NULL, 0, "grads", &e) < 0) {
      fprintf(stderr, "bench_json: %s\n", e.msg);
      return 1;
    }
    jdoc_free(&d);
    double t1 = bench_now();
    if (memcmp(out, v, n * sizeof(float)) != 0) {
      fprintf(stderr, "bench_json: decode does not round-trip\n");
      return 1;
    }
    /* decode, jansson */
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    double t2 = bench_now();
    json_t *arr = json_object_get(root, "grads");
    for (size_t i = 0; i < n; i++) out[i] = (float)json_number_value(json_array_get(arr, i));
    json_decref(root);
    double t3 = bench_now();
    /* encode, ours */
    jbuf b;
    jbuf_init(&b, pool, n * 11 + 256);
    jbuf_floats(&b, v, n);
    double t4 = bench_now();
    enc_len_ours = b.len;
    jbuf_release(&b);
    /* encode, jansson */
    double t5 = bench_now();
    json_t *ja = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(ja, json_real(v[i]));
    double t6 = bench_now();
    size_t need = json_dumpb(ja, NULL, 0, JSON_COMPACT);
    char *jt = malloc(need);
    enc_len_jans = json_dumpb(ja, jt, need, JSON_COMPACT);
    double t7 = bench_now();
    json_decref(ja);
    free(jt);
    double t8 = bench_now();
    if (r == 0) continue; /* warm: pools, page faults */
    dec_ours = bench_min(dec_ours, t1 - t0);
    dec_jans_only = bench_min(dec_jans_only, t2 - t1);
    dec_jans = bench_min(dec_jans, t3 - t1);
    enc_ours = bench_min(enc_ours, t4 - t3);
    enc_jans_only = bench_min(enc_jans_only, t7 - t6);
    enc_jans = bench_min(enc_jans, (t6 - t5) + (t8 - t6));
  }
  double N = (double)n;
  printf("JSON: %zu floats (%.1f MB of text), floats/s, best of %d\n", n, len / 1e6, rounds);
  printf("  decode  daemon path  %8.1f M/s\n", N / dec_ours / 1e6);
  printf("          jansson      %8.1f M/s  (json_loadb alone %.1f M/s)   ours/jansson %.1fx (%.1fx)\n",
         N / dec_jans / 1e6, N / dec_jans_only / 1e6, dec_jans / dec_ours, dec_jans_only / dec_ours);
  printf("  encode  daemon path  %8.1f M/s  (%.1f bytes/float)\n", N / enc_ours / 1e6, enc_len_ours / N);
  printf("          jansson      %8.1f M/s  (json_dumpb alone %.1f M/s, %.1f bytes/float)   ours/jansson %.1fx (%.1fx)\n",
         N / enc_jans / 1e6, N / enc_jans_only / 1e6, enc_len_jans / N, enc_jans / enc_ours,
         enc_jans_only / enc_ours);
  bench_put(N / dec_ours, "json.decode.ours");
  bench_put(N / dec_jans, "json.decode.jansson");
  bench_put(N / dec_jans_only, "json.decode.jansson_loads");
  bench_put(N / enc_ours, "json.encode.ours");
  bench_put(N / enc_jans, "json.encode.jansson");
  bench_put(N / enc_jans_only, "json.encode.jansson_dumps");
  bufpool_free(pool);
  free(text);
  free(v);
  free(out);
  bench_out_close();
  return 0;
}
