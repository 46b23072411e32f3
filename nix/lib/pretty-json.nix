# JSON rendered one member per line, so that `sai validate` points at the
# line of a bad setting (builtins.toJSON writes everything on one line).
# Keys come out sorted, as Nix stores attribute sets.
let
  render =
    indent: value:
    let
      inner = indent + "  ";
      renderMembers =
        open: close: items:
        if items == [ ] then
          open + close
        else
          open + "\n" + builtins.concatStringsSep ",\n" (map (item: inner + item) items) + "\n" + indent + close;
    in
    if builtins.isAttrs value && !(value ? outPath) then
      renderMembers "{" "}"
        (
          map (name: builtins.toJSON name + ": " + render inner value.${name}) (builtins.attrNames value)
        )
    else if builtins.isList value then
      renderMembers "[" "]" (map (render inner) value)
    else
      builtins.toJSON value;
in
value: render "" value + "\n"
