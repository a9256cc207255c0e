# install.mk: `make install` and `make uninstall`, as Debian packaging expects.
#
#   make install                          into /usr/local
#   make install PREFIX=/usr DESTDIR=$(CURDIR)/debian/descent
#                                         a package's staging tree (dh_auto_install)
#   make uninstall [PREFIX=...] [DESTDIR=...]
#
# What goes where (each directory can be overridden on the command line):
#   $(SBINDIR)/descentd                    the daemon (a system service: sbin)
#   $(BINDIR)/descent                      the command-line client
#   $(LIBDIR)/libdescent.so.$(DESCENT_SOVERSION_FULL), .so.$(DESCENT_SOVERSION), .so
#                                          the C client library (soname libdescent.so.$(DESCENT_SOVERSION))
#   $(LIBDIR)/libdescent.a                 the same, static
#   $(INCLUDEDIR)/descent.h                its header
#   $(PKGCONFIGDIR)/descent.pc             for `pkg-config --cflags --libs descent`
#   $(SYSTEMDUNITDIR)/descentd.service     contrib/descentd.service, ExecStart pointing at $(SBINDIR)
#   $(MANDIR)/man8/descentd.8, man1/descent.1
#
# `make && sudo make install` installs what `make` built (install builds what
# is missing, and links the versioned libdescent.so); descent.pc and the unit
# are written with the paths of this install.
# This file is included at the end of the Makefile and uses its variables
# ($(B), $(DAEMON), $(CLI), $(LIB_A), $(CLIENT_PIC), $(CLIENT_LIBS)).

PREFIX         ?= /usr/local
DESTDIR        ?=
BINDIR         ?= $(PREFIX)/bin
SBINDIR        ?= $(PREFIX)/sbin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
PKGCONFIGDIR   ?= $(LIBDIR)/pkgconfig
MANDIR         ?= $(PREFIX)/share/man
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install

DESCENT_VERSION_STR    := $(shell sed -n 's/^\#define DESCENT_VERSION "\(.*\)"/\1/p' client/descent.h)
DESCENT_SOVERSION      := 0
DESCENT_SOVERSION_FULL := $(DESCENT_SOVERSION).$(patsubst 0.%,%,$(DESCENT_VERSION_STR))

# The installed shared library carries a versioned soname (the build tree's
# $(LIB_SO) keeps the plain one the tests link against).
LIB_SOV := $(B)/lib/libdescent.so.$(DESCENT_SOVERSION_FULL)

$(LIB_SOV): $(CLIENT_PIC) client/libdescent.map
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS_ALL) -Wl,--version-script=client/libdescent.map \
	  -Wl,-soname,libdescent.so.$(DESCENT_SOVERSION) $(CLIENT_PIC) $(CLIENT_LIBS) -o $@

.PHONY: install uninstall
install: $(DAEMON) $(CLI) $(LIB_A) $(LIB_SOV)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 0755 $(DAEMON) $(DESTDIR)$(SBINDIR)/descentd
	$(INSTALL) -m 0755 $(CLI) $(DESTDIR)$(BINDIR)/descent
	$(INSTALL) -m 0644 $(LIB_SOV) $(DESTDIR)$(LIBDIR)/libdescent.so.$(DESCENT_SOVERSION_FULL)
	ln -sf libdescent.so.$(DESCENT_SOVERSION_FULL) $(DESTDIR)$(LIBDIR)/libdescent.so.$(DESCENT_SOVERSION)
	ln -sf libdescent.so.$(DESCENT_SOVERSION) $(DESTDIR)$(LIBDIR)/libdescent.so
	$(INSTALL) -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libdescent.a
	$(INSTALL) -m 0644 client/descent.h $(DESTDIR)$(INCLUDEDIR)/descent.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' 'Name: descent' \
	  'Description: C client of descentd, the optimizer daemon (torch.optim over HTTP)' \
	  'Version: $(DESCENT_VERSION_STR)' 'Requires.private: libcurl jansson' 'Cflags: -I$${includedir}' \
	  'Libs: -L$${libdir} -ldescent' 'Libs.private: -lm' > $(DESTDIR)$(PKGCONFIGDIR)/descent.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/descent.pc
	sed 's|/usr/local/sbin/descentd|$(SBINDIR)/descentd|g' contrib/descentd.service \
	  > $(DESTDIR)$(SYSTEMDUNITDIR)/descentd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/descentd.service
	$(INSTALL) -m 0644 man/descent.1 $(DESTDIR)$(MANDIR)/man1/descent.1
	$(INSTALL) -m 0644 man/descentd.8 $(DESTDIR)$(MANDIR)/man8/descentd.8

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/descentd $(DESTDIR)$(BINDIR)/descent \
	  $(DESTDIR)$(LIBDIR)/libdescent.so.$(DESCENT_SOVERSION_FULL) $(DESTDIR)$(LIBDIR)/libdescent.so.$(DESCENT_SOVERSION) \
	  $(DESTDIR)$(LIBDIR)/libdescent.so $(DESTDIR)$(LIBDIR)/libdescent.a $(DESTDIR)$(INCLUDEDIR)/descent.h \
	  $(DESTDIR)$(PKGCONFIGDIR)/descent.pc $(DESTDIR)$(SYSTEMDUNITDIR)/descentd.service \
	  $(DESTDIR)$(MANDIR)/man1/descent.1 $(DESTDIR)$(MANDIR)/man8/descentd.8
