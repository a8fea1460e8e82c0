# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ftpfs_global_optspecs
    string join \n o= f/foreground d/debug h/help V/version
end

function __fish_ftpfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ftpfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ftpfs_using_subcommand
    set -l cmd (__fish_ftpfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ftpfs -n "__fish_ftpfs_needs_command" -s o -d 'Mount options, comma separated (see below); may be repeated' -r -f
complete -c ftpfs -n "__fish_ftpfs_needs_command" -s f -l foreground -d 'Stay in the foreground instead of going to the background'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -s d -l debug -d 'Debug output: log the FTP dialogue (PASS masked); implies -f'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -s h -l help -d 'Print help'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -s V -l version -d 'Print version'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -a "status" -d 'Show the state of a running ftpfs mount'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -a "sync" -d 'Wait until a mount has uploaded everything written to it; exit 1, naming the files, if an upload failed for good'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -a "completions" -d 'Print a shell completion script to stdout'
complete -c ftpfs -n "__fish_ftpfs_needs_command" -a "man" -d 'Print the man page (roff) to stdout'
complete -c ftpfs -n "__fish_ftpfs_using_subcommand status" -s h -l help -d 'Print help'
complete -c ftpfs -n "__fish_ftpfs_using_subcommand sync" -l timeout -d 'Give up waiting after this many seconds (exit 1); default: no limit' -r
complete -c ftpfs -n "__fish_ftpfs_using_subcommand sync" -s h -l help -d 'Print help'
complete -c ftpfs -n "__fish_ftpfs_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ftpfs -n "__fish_ftpfs_using_subcommand man" -s h -l help -d 'Print help'
