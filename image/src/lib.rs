//! Images for crust: references, the registry client, the content-addressed store and
//! layer unpacking (issue 3). Nothing is public yet: until it lands, crustd answers the
//! ImageService RPCs with `UNIMPLEMENTED`.
