module go_parse_oracle

go 1.19
