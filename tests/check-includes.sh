#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/check-includes.sh ROOT [--expect N]
#
# The include rules of docs/ARCHITECTURE.md ("What each folder may include"),
# checked on the tree at ROOT. The library's folders are layered
# (transport -> cas -> pager -> util; agent/ uses the others through the
# public API only, and util/internal.h); each includes its own headers and,
# from the folders below it, only their one internal header (FOLDER/internal.h),
# always by root-relative path ("pager/internal.h"), never a bare name. The
# public headers include only each other; tools/ includes only the public
# headers and its own. Any header may include system headers.
#
# Prints each violation as FILE:LINE: what; exits 1 if there is one. With
# --expect N (the self-test on tests/includes/), exits 0 exactly when N
# violations were found. Usage errors exit 2.
set -u
root=${1:-}
expect=
if [ "${2:-}" = --expect ]; then
	expect=${3:-}
fi
if [ -z "$root" ] || [ ! -d "$root" ] || { [ "${2:-}" = --expect ] && [ -z "$expect" ]; }; then
	echo "usage: check-includes.sh ROOT [--expect N]" >&2
	exit 2
fi

# What FOLDER may include besides its own headers.
below() {
	case $1 in
	util) echo "" ;;
	pager) echo "util/internal.h" ;;
	cas) echo "util/internal.h pager/internal.h" ;;
	transport) echo "util/internal.h pager/internal.h cas/internal.h" ;;
	agent) echo "util/internal.h" ;; # above the rest, through the public API
	esac
}

n=0
bad() {
	echo "$1: $2"
	n=$((n + 1))
}

# A path inside the tree (first component one of its folders)?
internal_path() {
	case $1 in
	util/* | pager/* | cas/* | transport/* | agent/* | tools/* | tests/*) return 0 ;;
	esac
	return 1
}

for dir in util pager cas transport agent tools include/kvmig; do
	for f in "$root/$dir"/*.c "$root/$dir"/*.h; do
		[ -e "$f" ] || continue
		rel=${f#"$root"/}
		while IFS= read -r hit; do
			line=${hit%%:*}
			text=${hit#*:}
			if [[ $text =~ \#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
				name=${BASH_REMATCH[1]}
				quoted=1
			elif [[ $text =~ \#[[:space:]]*include[[:space:]]*\<([^\>]+)\> ]]; then
				name=${BASH_REMATCH[1]}
				quoted=0
			else
				bad "$rel:$line" "cannot read this include"
				continue
			fi
			case $dir in
			include/kvmig)
				if [ $quoted = 1 ] || internal_path "$name"; then
					bad "$rel:$line" "a public header includes \"$name\" (only <kvmig/...> and system headers)"
				elif [[ $name == kvmig/* ]] && [ ! -e "$root/include/$name" ]; then
					bad "$rel:$line" "<$name> is not a public header"
				fi
				;;
			tools)
				if [ $quoted = 1 ]; then
					if [[ $name == */* ]] || [ ! -e "$root/tools/$name" ]; then
						bad "$rel:$line" "tools/ includes \"$name\" (only its own headers and <kvmig/...>)"
					fi
				elif internal_path "$name"; then
					bad "$rel:$line" "tools/ includes <$name> (only its own headers and <kvmig/...>)"
				elif [[ $name == kvmig/* ]] && [ ! -e "$root/include/$name" ]; then
					bad "$rel:$line" "<$name> is not a public header"
				fi
				;;
			*)
				if [ $quoted = 0 ]; then
					if internal_path "$name"; then
						bad "$rel:$line" "<$name>: include the tree's headers by quoted root-relative path (\"$name\")"
					elif [[ $name == kvmig/* ]] && [ ! -e "$root/include/$name" ]; then
						bad "$rel:$line" "<$name> is not a public header"
					fi
					continue
				fi
				if [[ $name != */* ]]; then
					bad "$rel:$line" "\"$name\": include by root-relative path (\"$dir/$name\")"
				elif [[ $name == "$dir"/* ]]; then
					[ -e "$root/$name" ] || bad "$rel:$line" "\"$name\" does not exist"
				elif [[ " $(below "$dir") " == *" $name "* ]]; then
					:
				else
					bad "$rel:$line" "$dir/ may not include \"$name\" (allowed from other folders: $(below "$dir" | sed 's/^$/none/'))"
				fi
				;;
			esac
		done < <(grep -n -E '^[[:space:]]*#[[:space:]]*include' "$f")
	done
done

if [ -n "$expect" ]; then
	if [ "$n" -ne "$expect" ]; then
		echo "self-test: expected $expect violations, found $n" >&2
		exit 1
	fi
	exit 0
fi
if [ "$n" -gt 0 ]; then
	echo "$n include(s) break the rules of docs/ARCHITECTURE.md" >&2
	exit 1
fi
exit 0
