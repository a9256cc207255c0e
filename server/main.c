/* main: descentd's entry point: the options (config_load), the flags that
 * print and exit (--help, --help-markdown, --version, --print-routes), else
 * daemon_run.  Owns the config for the process's life.  Never starts a
 * thread itself.  Exit status: 2 for bad options, else daemon_run's.  Main
 * thread. */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "daemon.h"
#include "http_routes.h"
#include "optim.h"

int main(int argc, char **argv) {
  config cfg;
  derr e = {0};
  if (config_load(&cfg, argc, argv, &e) < 0) {
    fprintf(stderr, "descentd: %s\n", e.msg);
    config_free(&cfg);
    return 2;
  }
  int code = 0;
  if (cfg.help) config_usage(stdout);
  else if (cfg.help_markdown) config_markdown(stdout);
  else if (cfg.version) printf("descentd %s (kernels: %s)\n", DESCENT_VERSION, optim_isa());
  else if (cfg.print_routes) routes_print(stdout);
  else code = daemon_run(&cfg);
  config_free(&cfg);
  return code;
}
