/* bench/load: the load generator of bench_service and bench_durability.
 *
 * libcurl's multi interface on the calling thread: nconn easy handles, each
 * on its own kept-alive connection, POSTing one body again as soon as its
 * reply is in; counts the pushes completed in a window and, when asked,
 * records each one's latency.  Header-only (static), like common.h; never
 * starts a thread.
 */
#ifndef DESCENT_BENCH_LOAD_H
#define DESCENT_BENCH_LOAD_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct conn {
  CURL *h;
  struct curl_slist *hdrs;
  int id;
  size_t got;
  long pushes; /* completed */
  double sent_at;
} conn;

typedef struct load {
  CURLM *m;
  conn *c;
  int nconn;
  const char *body;
  size_t blen;
  long failures, last_failure; /* last_failure: its HTTP status (0: no reply) */
  bool follow;    /* a 307 re-points that handle at its Location (a replica's leader) */
  long redirects; /* 307s followed */
  double *lat; /* when not NULL: each counted push's latency (s), up to lat_cap */
  long nlat, lat_cap;
} load;

static size_t sink(char *p, size_t sz, size_t nm, void *ud) {
  (void)p;
  ((conn *)ud)->got += sz * nm;
  return sz * nm;
}

/* nconn handles POSTing body to url_fmt (may contain %d: the worker's index). */
static void load_init(load *L, int nconn, const char *url_fmt, const char *body, size_t blen, bool binary) {
  memset(L, 0, sizeof *L);
  L->m = curl_multi_init();
  curl_multi_setopt(L->m, CURLMOPT_MAXCONNECTS, (long)nconn + 4);
  L->c = calloc((size_t)nconn, sizeof *L->c);
  L->nconn = nconn;
  L->body = body;
  L->blen = blen;
  for (int i = 0; i < nconn; i++) {
    conn *c = &L->c[i];
    char url[512];
    snprintf(url, sizeof url, url_fmt, i);
    c->id = i;
    c->h = curl_easy_init();
    c->hdrs = curl_slist_append(NULL, binary ? "Content-Type: application/octet-stream"
                                             : "Content-Type: application/json");
    c->hdrs = curl_slist_append(c->hdrs, binary ? "Accept: application/octet-stream" : "Accept: application/json");
    c->hdrs = curl_slist_append(c->hdrs, "Expect:");
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_POST, 1L);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->h, CURLOPT_BUFFERSIZE, 512L * 1024);
  }
}

static void load_free(load *L) {
  for (int i = 0; i < L->nconn; i++) {
    curl_multi_remove_handle(L->m, L->c[i].h);
    curl_easy_cleanup(L->c[i].h);
    curl_slist_free_all(L->c[i].hdrs);
  }
  curl_multi_cleanup(L->m);
  free(L->c);
}

/* Runs every connection in a loop for `seconds` (after `warm` seconds not
 * counted); on_done(c) is called for each completed push.  Returns the
 * pushes completed in the counted window. */
typedef void (*done_fn)(conn *c, double now, void *ctx);

static long load_run(load *L, double warm, double seconds, done_fn on_done, void *ctx) {
  for (int i = 0; i < L->nconn; i++) {
    L->c[i].sent_at = bench_now();
    curl_multi_add_handle(L->m, L->c[i].h);
  }
  double t0 = bench_now(), start = t0 + warm, stop = start + seconds;
  long counted = 0;
  int running = 1;
  bool stopping = false;
  while (running || !stopping) {
    curl_multi_perform(L->m, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(L->m, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      conn *c;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
      long code = 0;
      curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
      double now = bench_now();
      bool moved = L->follow && code == 307;
      if (moved) {
        char *to = NULL;
        curl_easy_getinfo(c->h, CURLINFO_REDIRECT_URL, &to);
        if (to) curl_easy_setopt(c->h, CURLOPT_URL, to); /* libcurl copies it */
        L->redirects++;
      } else if (msg->data.result != CURLE_OK || code != 200) {
        L->failures++;
        L->last_failure = code;
      }
      c->pushes++;
      if (now >= start && now < stop && code == 200) {
        counted++;
        if (L->lat && L->nlat < L->lat_cap) L->lat[L->nlat++] = now - c->sent_at;
      }
      if (on_done) on_done(c, now, ctx);
      curl_multi_remove_handle(L->m, c->h);
      c->got = 0;
      if (now < stop) {
        c->sent_at = bench_now();
        curl_multi_add_handle(L->m, c->h); /* reuses its kept-alive connection */
        running = 1;
      }
    }
    if (bench_now() >= stop) stopping = true;
    if (running) curl_multi_poll(L->m, NULL, 0, 50, NULL);
  }
  return counted;
}

#endif
