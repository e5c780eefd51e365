#!/usr/bin/perl
# Serve Proxmox's interfaces writer to the tests: run ../shared/pve/pve-rewrite (given as the
# first argument) once per request, in this one perl process, because loading its modules takes
# ~0.3 s per run. The script itself is run unchanged, with STDIN and STDOUT bound to the request.
#
# Protocol, on stdin/stdout: a request is "<n>\n" and n bytes (the file); the answer is
# "ok <n>\n" and n bytes (the file as Proxmox writes it) or "err <n>\n" and n bytes (its error).
use strict;
use warnings;
use File::Basename qw(dirname);

my $script = shift or die "usage: pve_rewrite.pl PATH-TO-pve-rewrite\n";
unshift @INC, dirname($script) . "/pve-common";
require PVE::Network::Interfaces;    # loaded once; the script's own 'use' then finds it loaded

binmode(STDIN);
binmode(STDOUT);
$| = 1;
while (defined(my $header = <STDIN>)) {
    my ($size) = $header =~ /^(\d+)$/ or die "bad request header: $header";
    my $input = '';
    while (length($input) < $size) {
        read(STDIN, $input, $size - length($input), length($input)) or die "short request\n";
    }
    my $output = '';
    my $ok = eval {
        open(local *STDIN, '<', \$input) or die "cannot read request\n";
        open(local *STDOUT, '>', \$output) or die "cannot capture output\n";
        local $SIG{__WARN__} = sub { };    # the real script's warnings go to stderr, not stdout
        do $script;
        die $@ if $@;
        1;
    };
    my ($status, $body) = $ok ? ('ok', $output) : ('err', "$@");
    utf8::encode($body) if utf8::is_utf8($body);
    print STDOUT "$status " . length($body) . "\n" . $body;
}
