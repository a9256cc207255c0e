/* dashboard_blob: server/http/dashboard.html linked into descentd as read-only
 * bytes (descent_dashboard_html .. descent_dashboard_html_end), so the page
 * is served from the binary with no file to install and no build step. */
        .section .rodata
        .global descent_dashboard_html
        .global descent_dashboard_html_end
        .balign 16
descent_dashboard_html:
        .incbin "server/http/dashboard.html"
descent_dashboard_html_end:
        .byte 0
        .section .note.GNU-stack,"",@progbits
